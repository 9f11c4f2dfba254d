r"""Linear probe classifiers in torch, on the device that holds the features (private).

Each solves scikit-learn's objective for the same options, so that ``solver="torch"`` and
``solver="sklearn"`` of :class:`~hrsa.metrics.function.LinearProbeTransfer` fit the same model;
``F: (n, d)`` are float64 features, ``codes: (n,)`` int64 class indices into ``classes``.

* :class:`LogisticProbe`: ``LogisticRegression(C=C)``, i.e. minimises
  ``f(W, b) = (1/n) sum_i loss_i + ||W||_F^2 / (2 C n)`` (intercept not penalised): softmax
  cross-entropy over ``K`` classes (multinomial), or one logit for two classes (sklearn's
  binary model), by L-BFGS with a strong-Wolfe line search until ``max|grad f| <= tol``.
  scikit-learn's lbfgs stops at ``tol = 1e-4``, typically 0.5-1% above the optimum in ``f``;
  ``tol = 1e-6`` here reaches it to about 1e-8 in ``f`` at a similar cost (docs/metrics.md).
* :class:`RidgeProbe`: ``RidgeClassifier(alpha)`` in closed form: targets in {-1, 1} (one
  column for two classes), centred, ``W = (Fc^T Fc + alpha I)^{-1} Fc^T Yc``.

Prediction: ``argmax_k (F W + b)_k``, or ``classes[1]`` where the single logit is > 0.
"""

from __future__ import annotations

import numpy as np
import torch

from ._util import warn

__all__ = ["LogisticProbe", "RidgeProbe"]


class _LinearProbe:
    """A fitted linear readout ``z = F W + b``: ``coef: (d, m)``, ``intercept: (m,)`` with
    ``m = 1`` for two classes, else one column per class."""

    def __init__(self, classes: np.ndarray) -> None:
        self.classes = np.asarray(classes)
        self.coef: torch.Tensor | None = None
        self.intercept: torch.Tensor | None = None

    @property
    def _outputs(self) -> int:
        return 1 if self.classes.size == 2 else self.classes.size

    def decision_function(self, F: torch.Tensor) -> torch.Tensor:
        """``(n, m)`` scores of the rows of ``F: (n, d)``."""
        return F @ self.coef + self.intercept

    def predict(self, F: torch.Tensor) -> np.ndarray:
        """``(n,)`` predicted labels (from ``classes``) of the rows of ``F: (n, d)``."""
        z = self.decision_function(F)
        codes = (z[:, 0] > 0).long() if z.shape[1] == 1 else z.argmax(dim=1)
        return self.classes[codes.cpu().numpy()]

    def score(self, F: torch.Tensor, labels: np.ndarray) -> float:
        """Accuracy on the rows of ``F: (n, d)`` with true ``labels: (n,)``."""
        return float(np.mean(self.predict(F) == np.asarray(labels)))


class LogisticProbe(_LinearProbe):
    """scikit-learn's ``LogisticRegression(C=C)`` objective, minimised by torch L-BFGS."""

    def __init__(self, classes: np.ndarray, C: float = 1.0, tol: float = 1e-6,
                 max_iter: int = 1000) -> None:
        super().__init__(classes)
        self.C, self.tol, self.max_iter = float(C), float(tol), int(max_iter)
        self.n_iter = 0

    def _objective(self, F: torch.Tensor, codes: torch.Tensor, W: torch.Tensor,
                   b: torch.Tensor) -> torch.Tensor:
        """``f(W, b)``, with its gradient written to ``W.grad`` and ``b.grad`` (closed form:
        ``grad_z = (p - y) / n``), so that no autograd graph is needed."""
        n = F.shape[0]
        z = F @ W + b
        if W.shape[1] == 1:  # binary: p = sigmoid(z), loss = softplus(z) - t z
            t = codes.to(F.dtype)[:, None]
            loss = (torch.nn.functional.softplus(z) - t * z).mean()
            dz = (torch.sigmoid(z) - t) / n
        else:
            logp = torch.log_softmax(z, dim=1)
            loss = -logp.gather(1, codes[:, None]).mean()
            dz = logp.exp_()
            dz[torch.arange(n, device=F.device), codes] -= 1
            dz /= n
        W.grad = F.T @ dz + W / (self.C * n)
        b.grad = dz.sum(dim=0)
        return loss + W.square().sum() / (2 * self.C * n)

    def fit(self, F: torch.Tensor, codes: torch.Tensor) -> LogisticProbe:
        """Fit on ``F: (n, d)`` float64 and ``codes: (n,)``; warns if L-BFGS stops after
        ``max_iter`` iterations with ``max|grad f| > tol``."""
        d = F.shape[1]
        W = torch.zeros(d, self._outputs, dtype=F.dtype, device=F.device)
        b = torch.zeros(self._outputs, dtype=F.dtype, device=F.device)
        opt = torch.optim.LBFGS([W, b], lr=1, max_iter=self.max_iter,
                                max_eval=2 * self.max_iter, tolerance_grad=self.tol,
                                tolerance_change=64 * torch.finfo(F.dtype).eps,
                                history_size=10, line_search_fn="strong_wolfe")
        with torch.no_grad():
            opt.step(lambda: self._objective(F, codes, W, b))
            self._objective(F, codes, W, b)
            gmax = float(torch.maximum(W.grad.abs().max(), b.grad.abs().max()))
        self.n_iter = int(opt.state[W].get("n_iter", 0))
        if gmax > self.tol:
            warn(f"linear_probe_transfer: L-BFGS stopped after {self.n_iter} iterations with "
                 f"max|gradient| {gmax:.2e} > tol {self.tol:g} (not converged; scale the "
                 "features, e.g. standardize=True, or raise C's regularisation)")
        self.coef, self.intercept = W, b
        return self


class RidgeProbe(_LinearProbe):
    """scikit-learn's ``RidgeClassifier(alpha=alpha)`` in closed form."""

    def __init__(self, classes: np.ndarray, alpha: float = 1.0) -> None:
        super().__init__(classes)
        self.alpha = float(alpha)

    def fit(self, F: torch.Tensor, codes: torch.Tensor) -> RidgeProbe:
        """Fit on ``F: (n, d)`` float64 and ``codes: (n,)``: the primal ``(d, d)`` system, or
        the dual ``(n, n)`` one ``W = Fc^T (Fc Fc^T + alpha I)^{-1} Yc`` when ``n < d``."""
        n, d = F.shape
        Y = -torch.ones(n, self.classes.size, dtype=F.dtype, device=F.device)
        Y[torch.arange(n, device=F.device), codes] = 1
        Y = Y[:, 1:] if self._outputs == 1 else Y
        mu_f, mu_y = F.mean(dim=0), Y.mean(dim=0)
        Fc, Yc = F - mu_f, Y - mu_y
        if n < d:
            K = Fc @ Fc.T
            K.diagonal().add_(self.alpha)
            W = Fc.T @ torch.linalg.solve(K, Yc)
        else:
            G = Fc.T @ Fc
            G.diagonal().add_(self.alpha)
            W = torch.linalg.solve(G, Fc.T @ Yc)
        self.coef, self.intercept = W, mu_y - mu_f @ W
        return self
