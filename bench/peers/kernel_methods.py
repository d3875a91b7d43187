"""The peers of bench/kernel_methods.cpp: each workload of issue 22's performance table in the
library it is compared with, at the shape given, one row per call (bench/kernel_methods.py runs
both sides and writes the ratios). Inputs follow the same law as bench_kernel_methods' (drawn
here with numpy's or torch's generator, not the same numbers), float64 throughout, built outside
the timing. The median of --repeats calls after one warm-up call (timing.py).

  workload       peer               what is timed
  ntk_gram       neural_tangents    stax ReLU net (Dense(512, W_std=√2, b_std=√0.1), Relu) × depth +
                                    Dense(1): jit(kernel_fn)(x, None, ("nngp", "ntk"))
  empirical_ntk  neural_tangents    jit(empirical_ntk_fn(f, trace_axes=(), vmap_axes=0)) of the same
                                    finite net (--width units, NTK parameterisation)
                 torch_func         Σ_params J Jᵀ with J = vmap(jacrev(f)) of the same net (per-sample Jacobians)
  rf_path        sklearn            RidgeCV(alphas = the --lambdas grid, fit_intercept=False,
                                    gcv_mode="svd").fit(Φ, y) on ReLU random features Φ [n, k]
  krr            sklearn            KernelRidge(alpha=0.1, kernel="rbf", gamma=0.5).fit(x, y)
  kde            sklearn            KernelDensity(bandwidth=1, rtol=0).fit(data).score_samples(queries)
  quantum_gram   qiskit_ml          FidelityStatevectorKernel(feature_map=zz_feature_map(qubits)).evaluate(x)
  dpp            dppy_chain_rule    MultivariateJacobiOPE(m, [[0, 0]]).sample(tridiag_1D=False)
                 dppy_tridiagonal   the same object's sample() (Killip–Nenciu tridiagonal model)
  gp             gpytorch           ExactGP (ScaleKernel(RBFKernel), GaussianLikelihood), exact
                                    Cholesky (max_cholesky_size raised above n): −mll and backward()
  dp_classifier  opacus             DP-SGD logistic regression (PrivacyEngine, ε = --epsilon,
                                    δ = 1/n, --epochs epochs, batch 256) on --data (safetensors x, y)

  python bench/peers/kernel_methods.py --workload NAME --peer PEER --n N [--m M] [--d D]
      [--depth L] [--width W] [--k K] [--lambdas 30] [--qubits 8] [--repeats 3] [--threads T]
Prints one JSON object (the shape, the peer with its version, seconds).
"""
import argparse
import json
import math
import os
import sys

parser = argparse.ArgumentParser()
parser.add_argument("--workload", required=True)
parser.add_argument("--peer", required=True)
for flag, default in (("n", 0), ("m", 0), ("d", 0), ("depth", 3), ("width", 1024), ("k", 0), ("lambdas", 30),
                      ("qubits", 8), ("repeats", 3), ("threads", 0), ("epochs", 5)):
    parser.add_argument(f"--{flag}", type=int, default=default)
parser.add_argument("--epsilon", type=float, default=1.0)
parser.add_argument("--data", default="")
args = parser.parse_args()

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import numpy as np  # noqa: E402
import timing  # noqa: E402  bench/peers/timing.py

W_VAR, B_VAR = 2.0, 0.1
rng = np.random.default_rng(1)


def version(package):
    from importlib.metadata import version as v
    return v(package)


def torch_threads():
    import torch
    if args.threads:
        torch.set_num_threads(args.threads)
    return torch


def stax_net(width):
    from neural_tangents import stax
    layers = []
    for _ in range(args.depth):
        layers += [stax.Dense(width, W_std=math.sqrt(W_VAR), b_std=math.sqrt(B_VAR)), stax.Relu()]
    layers.append(stax.Dense(1, W_std=math.sqrt(W_VAR), b_std=math.sqrt(B_VAR)))
    return stax.serial(*layers)


def ntk_gram():
    import jax
    jax.config.update("jax_enable_x64", True)
    x = jax.numpy.asarray(rng.normal(size=(args.n, args.d)) / math.sqrt(args.d))
    _, _, kernel_fn = stax_net(512)
    fn = jax.jit(kernel_fn, static_argnames="get")
    return lambda: fn(x, None, ("nngp", "ntk")).ntk.block_until_ready(), "neural-tangents"


def empirical_ntk_nt():
    import jax
    jax.config.update("jax_enable_x64", True)
    import neural_tangents as nt
    x = jax.numpy.asarray(rng.normal(size=(args.n, args.d)) / math.sqrt(args.d))
    init_fn, apply_fn, _ = stax_net(args.width)
    _, params = init_fn(jax.random.PRNGKey(2), x.shape)
    fn = jax.jit(nt.empirical_ntk_fn(apply_fn, trace_axes=(), vmap_axes=0))
    return lambda: fn(x, None, params).block_until_ready(), "neural-tangents"


def empirical_ntk_torch():
    torch = torch_threads()
    from torch.func import jacrev, vmap
    gen = torch.Generator().manual_seed(2)
    sizes = [args.d] + [args.width] * args.depth + [1]
    params = {}
    for layer in range(len(sizes) - 1):
        params[f"w{layer}"] = torch.randn(sizes[layer + 1], sizes[layer], generator=gen, dtype=torch.float64)
        params[f"b{layer}"] = torch.randn(sizes[layer + 1], generator=gen, dtype=torch.float64)

    def f(p, h):  # one input [d] -> scalar; NTK parameterisation: σ_w/√n_l W h + σ_b b
        for layer in range(len(sizes) - 1):
            h = math.sqrt(W_VAR / sizes[layer]) * p[f"w{layer}"] @ h + math.sqrt(B_VAR) * p[f"b{layer}"]
            if layer < len(sizes) - 2:
                h = torch.relu(h)
        return h.squeeze(-1)

    x = torch.from_numpy(rng.normal(size=(args.n, args.d)) / math.sqrt(args.d))
    jacobian = vmap(jacrev(f), (None, 0))

    def run():
        j = jacobian(params, x)
        return sum(torch.einsum("i...,j...->ij", t.reshape(args.n, -1), t.reshape(args.n, -1)) for t in j.values())

    return run, "torch"


def rf_path():
    from sklearn.linear_model import RidgeCV
    x, g = rng.normal(size=(args.n, args.d)), rng.normal(size=(args.k, args.d))
    phi = np.maximum(x @ g.T / math.sqrt(args.d), 0) / math.sqrt(args.k)
    y = np.tanh(x[:, 0]) + 0.1 * rng.normal(size=args.n)
    grid = np.logspace(-4, 2, args.lambdas)
    return lambda: RidgeCV(alphas=grid, fit_intercept=False, gcv_mode="svd").fit(phi, y), "scikit-learn"


def krr():
    from sklearn.kernel_ridge import KernelRidge
    x = rng.normal(size=(args.n, args.d))
    y = np.sin(x[:, 0]) + 0.1 * rng.normal(size=args.n)
    return lambda: KernelRidge(alpha=0.1, kernel="rbf", gamma=0.5).fit(x, y), "scikit-learn"


def kde():
    from sklearn.neighbors import KernelDensity
    data, queries = rng.normal(size=(args.n, args.d)), rng.normal(size=(args.m, args.d))
    return lambda: KernelDensity(bandwidth=1.0, rtol=0).fit(data).score_samples(queries), "scikit-learn"


def quantum_gram():
    from qiskit.circuit.library import zz_feature_map
    from qiskit_machine_learning.kernels import FidelityStatevectorKernel
    x = rng.uniform(0, 2 * np.pi, size=(args.n, args.qubits))
    kernel = FidelityStatevectorKernel(feature_map=zz_feature_map(args.qubits, reps=2, entanglement="full"))
    return lambda: kernel.evaluate(x), "qiskit-machine-learning"


def dpp(tridiagonal):
    from dppy.multivariate_jacobi_ope import MultivariateJacobiOPE
    ope = MultivariateJacobiOPE(args.n, np.array([[0.0, 0.0]]))
    state = np.random.RandomState(3)
    return lambda: ope.sample(random_state=state, tridiag_1D=tridiagonal), "dppy"


def gp():
    torch = torch_threads()
    import gpytorch
    x = torch.from_numpy(rng.normal(size=(args.n, args.d)))
    y = torch.sin(x[:, 0]) + 0.1 * torch.from_numpy(rng.normal(size=args.n))

    class Model(gpytorch.models.ExactGP):
        def __init__(self, likelihood):
            super().__init__(x, y, likelihood)
            self.mean = gpytorch.means.ZeroMean()
            self.covar = gpytorch.kernels.ScaleKernel(gpytorch.kernels.RBFKernel())

        def forward(self, t):
            return gpytorch.distributions.MultivariateNormal(self.mean(t), self.covar(t))

    likelihood = gpytorch.likelihoods.GaussianLikelihood().double()
    model = Model(likelihood).double()
    model.covar.base_kernel.lengthscale = 1.0
    model.covar.outputscale = 1.0
    likelihood.noise = 0.1
    model.train()
    likelihood.train()
    mll = gpytorch.mlls.ExactMarginalLogLikelihood(likelihood, model)

    def run():
        model.zero_grad()
        with gpytorch.settings.max_cholesky_size(args.n + 1):
            loss = -mll(model(x), y)
            loss.backward()
        return loss.item()

    return run, "gpytorch"


def dp_classifier():
    torch = torch_threads()
    from opacus import PrivacyEngine
    from safetensors.torch import load_file
    data = load_file(args.data)
    x, y = data["x"].double(), data["y"].long()
    classes = int(y.max()) + 1

    def run():
        model = torch.nn.Linear(x.shape[1], classes).double()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
        loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=256)
        model, optimizer, loader = PrivacyEngine().make_private_with_epsilon(
            module=model, optimizer=optimizer, data_loader=loader, target_epsilon=args.epsilon,
            target_delta=1.0 / len(y), epochs=args.epochs, max_grad_norm=1.0)
        for _ in range(args.epochs):
            for xb, yb in loader:
                optimizer.zero_grad()
                torch.nn.functional.cross_entropy(model(xb), yb).backward()
                optimizer.step()
        with torch.no_grad():
            return float((model(x).argmax(1) == y).double().mean())

    return run, "opacus"


PEERS = {
    ("ntk_gram", "neural_tangents"): ntk_gram,
    ("empirical_ntk", "neural_tangents"): empirical_ntk_nt,
    ("empirical_ntk", "torch_func"): empirical_ntk_torch,
    ("rf_path", "sklearn"): rf_path,
    ("krr", "sklearn"): krr,
    ("kde", "sklearn"): kde,
    ("quantum_gram", "qiskit_ml"): quantum_gram,
    ("dpp", "dppy_chain_rule"): lambda: dpp(False),
    ("dpp", "dppy_tridiagonal"): lambda: dpp(True),
    ("gp", "gpytorch"): gp,
    ("dp_classifier", "opacus"): dp_classifier,
}

if (args.workload, args.peer) not in PEERS:
    sys.exit(f"kernel_methods.py: no peer {args.peer!r} for workload {args.workload!r}; known: "
             + ", ".join(f"{w}/{p}" for w, p in PEERS))
fn, package = PEERS[(args.workload, args.peer)]()
result = {}


def call():
    result["value"] = fn()


seconds = timing.median_seconds(call, args.repeats)
out = {k: getattr(args, k) for k in ("workload", "peer", "n", "m", "d", "depth", "width", "k", "lambdas", "qubits",
                                     "threads", "repeats")}
out.update({"package": package, "version": version(package), "seconds": seconds})
if args.workload == "dp_classifier":
    out["accuracy"] = result["value"]
print(json.dumps(out))
