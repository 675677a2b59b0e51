"""Mixed precision and ``torch.compile``: the fast paths compute the same models as float32 eager code.

bfloat16 keeps 8 significant bits, so its results agree with float32 to about 1e-2 relative; the
tests check that the bfloat16 path is really taken (results differ from float32), that it stays within
that tolerance, that everything the flow and the diffusion compute around the networks stays float32,
and that a compiled loss and a compiled sampling network give the eager results.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from genmodels.cli import main
from genmodels.config import DDPMModelConfig, TrainingConfig, default_config, with_overrides
from genmodels.errors import ConfigError
from genmodels.models.ddpm import DDPM
from genmodels.models.realnvp import RealNVP
from genmodels.train.acceleration import (
    COMPILE_WORTHWHILE_POINT_STEPS,
    TRAINING_COMPILE_WORTHWHILE_POINTS,
    autocast,
    compile_function,
    compiled_network,
    resolve_precision,
    sampling_plan,
    worth_compiling,
    worth_compiling_training,
)
from genmodels.train.trainer import Trainer

needs_compiler = pytest.mark.skipif(
    shutil.which("gcc") is None and shutil.which("cc") is None and shutil.which("g++") is None,
    reason="torch.compile on the CPU needs a C++ compiler",
)


def perturbed_flow(seed: int = 0, **kwargs) -> RealNVP:
    """A RealNVP whose couplings are far from the identity (random last layers)."""
    torch.manual_seed(seed)
    flow = RealNVP(2, n_coupling_layers=kwargs.pop("layers", 6), hidden_units=64, **kwargs)
    with torch.no_grad():
        for layer in flow.layers:
            last = layer.net[-1]
            last.weight.normal_(0, 0.3)
            last.bias.normal_(0, 0.3)
    return flow


MIX = torch.tensor([[1.4, 0.0], [0.9, 0.5]])
SHIFT = torch.tensor([2.0, -1.0])


def gaussian_data(n: int, seed: int = 0) -> torch.Tensor:
    """``n`` points of N(SHIFT, MIXᵀ MIX)."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(n, 2, generator=generator) @ MIX + SHIFT


def run_inputs(tmp_path: Path, n_points: int, settings: dict) -> tuple[Path, Path]:
    """A CSV of ``n_points`` points of :func:`gaussian_data` and a YAML config of ``settings``, for a run
    through the command line."""
    data = tmp_path / "data.csv"
    data.write_text("x,y\n" + "\n".join(f"{a},{b}" for a, b in gaussian_data(n_points).numpy()))
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(settings))
    return data, config


def test_float32_precision_is_exactly_the_plain_computation():
    flow = perturbed_flow()
    x = gaussian_data(512)
    with torch.no_grad():
        plain = flow.log_prob(x)
        with autocast("cpu", "float32"):
            inside = flow.log_prob(x)
    assert torch.equal(plain, inside)


def test_bfloat16_flow_log_prob_is_float32_and_close_to_float32():
    flow = perturbed_flow()
    x = gaussian_data(2048)
    with torch.no_grad():
        exact = flow.log_prob(x)
        with autocast("cpu", "bfloat16"):
            z, log_det = flow(x)
            mixed = flow.log_prob(x)
            hidden = flow.layers[0].net[0](x[:, :1])
    assert hidden.dtype == torch.bfloat16  # the conditioner's products do run in bfloat16
    assert z.dtype == log_det.dtype == mixed.dtype == torch.float32  # the bijection does not
    difference = (mixed - exact).abs()
    assert float(difference.max()) > 0  # really a different computation
    assert float(difference.mean()) < 0.05
    assert float((mixed - exact).mean().abs()) < 0.01  # no bias in the average log-likelihood


def test_bfloat16_ddpm_loss_is_close_to_float32_loss_with_the_same_noise():
    torch.manual_seed(0)
    config = DDPMModelConfig(diffusion_steps=50, hidden_units=64, n_blocks=2)
    model = DDPM.from_config(config, 2)
    with torch.no_grad():
        model.network.output.weight.normal_(0, 0.3)
    x = gaussian_data(4096)
    torch.manual_seed(1)
    exact = model.loss(x)
    torch.manual_seed(1)
    with autocast("cpu", "bfloat16"):
        mixed = model.loss(x)
        out = model.network(x, torch.ones(4096, dtype=torch.long))
    assert out.dtype == torch.float32
    exact, mixed = float(exact.detach()), float(mixed.detach())
    assert mixed != exact
    assert mixed == pytest.approx(exact, rel=0.02)


def fit(flow: RealNVP, data: torch.Tensor, **training) -> Trainer:
    flow.set_standardization(data.mean(0), data.std(0))
    config = TrainingConfig(
        epochs=training.pop("epochs", 40),
        batch_size=512,
        learning_rate=3e-3,
        lr_decay=0.99,
        ema_decay=0.0,
        eval_every=10**6,
        **training,
    )
    trainer = Trainer(flow, config, progress=False)
    trainer.fit(data)
    return trainer


def test_bfloat16_training_reaches_the_float32_likelihood():
    data, test = gaussian_data(4000, seed=0), gaussian_data(4000, seed=1)
    results = {}
    for precision in ("float32", "bfloat16"):
        torch.manual_seed(0)
        flow = RealNVP(2, n_coupling_layers=4, n_hidden=1, hidden_units=32)
        fit(flow, data, precision=precision)
        with torch.no_grad():
            results[precision] = float(-flow.log_prob(test).mean())
    true_nll = float(-torch.distributions.MultivariateNormal(SHIFT, MIX.T @ MIX).log_prob(test).mean())
    assert results["float32"] == pytest.approx(true_nll, abs=0.05)
    assert results["bfloat16"] == pytest.approx(results["float32"], abs=0.02)


@needs_compiler
def test_compiled_training_follows_the_eager_losses():
    data = gaussian_data(1024)
    histories = {}
    for compiled in (False, True):
        torch.manual_seed(0)
        flow = RealNVP(2, n_coupling_layers=2, n_hidden=1, hidden_units=16)
        trainer = fit(flow, data, epochs=3, compile="on" if compiled else "off")
        histories[compiled] = trainer.history["loss"]
    torch.testing.assert_close(
        torch.tensor(histories[True]), torch.tensor(histories[False]), atol=1e-4, rtol=1e-4
    )


@needs_compiler
@pytest.mark.parametrize("shape", [(1, 16), (2, 16), (16, 2), (16, 1), (16, 8)])
def test_a_compiled_thin_linear_layer_gives_the_product_and_gradients_of_f_linear(shape):
    """Inside torch.compile, a product with at most two input features is written as broadcast
    arithmetic (Linear.forward), with no matrix-multiply call in the generated code; its outputs and all
    three gradients must be F.linear's."""
    from torch._inductor.utils import run_and_get_code

    from genmodels.models.layers import Linear

    torch.manual_seed(0)
    n_in, n_out = shape
    layer = Linear(n_in, n_out)
    x = torch.randn(64, n_in, requires_grad=True)
    results, code = [], []
    for compiled in (False, True):
        layer.zero_grad(), x.grad is not None and x.grad.zero_()
        fn = lambda v: layer(v).tanh().sum()  # noqa: E731
        out, code = run_and_get_code(torch.compile(fn), x) if compiled else (fn(x), code)
        out.backward()
        results.append([out.detach(), x.grad.clone(), layer.weight.grad.clone(), layer.bias.grad.clone()])
    for eager, compiled in zip(*results, strict=True):
        torch.testing.assert_close(compiled, eager, atol=1e-5, rtol=1e-5)
    assert ("extern_kernels." in code[0]) == (shape[0] > 2)
    reference = torch.nn.functional.linear(x, layer.weight, layer.bias).tanh().sum()
    torch.testing.assert_close(results[1][0], reference.detach(), atol=1e-5, rtol=1e-5)


@needs_compiler
def test_a_partial_batch_gets_its_own_static_graph():
    """Every batch size gets its own static graph, compiled once: a shape-generic graph, torch's
    default after a second size, made the full batches of the DDPM step 1.5x slower."""
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    fn = compile_function(lambda x: (x.sin() * 2 + x).sum(0), "cpu")
    before = counters["stats"]["unique_graphs"]
    full, partial = torch.randn(64, 3), torch.randn(20, 3)
    for x in (full, partial, full, partial):
        torch.testing.assert_close(fn(x), (x.sin() * 2 + x).sum(0))
    assert counters["stats"]["unique_graphs"] - before == 2
    # Static graphs: a third size compiles a third one (a shape-generic graph would have served it).
    fn(torch.randn(48, 3))
    assert counters["stats"]["unique_graphs"] - before == 3


@needs_compiler
def test_compiled_network_samples_like_the_eager_one_and_leaves_the_model_as_it_was():
    torch.manual_seed(0)
    model = DDPM.from_config(DDPMModelConfig(diffusion_steps=10, hidden_units=16, n_blocks=1), 2).eval()
    with torch.no_grad():
        model.network.output.weight.normal_(0, 0.3)
    keys = list(model.state_dict())
    network = model.network
    eager = model.sample(64, generator=torch.Generator().manual_seed(3))
    with compiled_network(model) as fast:
        assert fast.network is not network
        compiled = fast.sample(64, generator=torch.Generator().manual_seed(3))
    assert model.network is network
    assert list(model.state_dict()) == keys
    torch.testing.assert_close(compiled, eager, atol=1e-4, rtol=1e-4)


def test_compiled_network_leaves_a_flow_alone():
    flow = perturbed_flow(layers=2)
    with compiled_network(flow) as same:
        assert same is flow
        assert all(not type(m).__name__.startswith("Optimized") for m in flow.modules())


def test_unknown_precision_is_a_clear_error():
    with pytest.raises(ValueError, match="precision.*'float16'"):
        autocast("cpu", "float16")
    config = default_config("realnvp")
    with pytest.raises(ConfigError, match="training.precision"):
        with_overrides(config, {"training.precision": "fp16"})
    with pytest.raises(ConfigError, match="sampling.compile must be 'auto', 'on' or 'off' \\(got 'yes'\\)"):
        with_overrides(config, {"sampling.compile": "yes"})
    assert with_overrides(config, {"training.compile": True}).training.compile == "on"
    assert with_overrides(config, {"sampling.compile": False}).sampling.compile == "off"


def test_cli_precision_option_reaches_the_run_and_the_sampler(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    data, config = run_inputs(
        tmp_path,
        600,
        {
            "model": {"n_coupling_layers": 2, "hidden_units": 16},
            "training": {"epochs": 2, "batch_size": 128},
            "sampling": {"n_samples": 200, "n_eval": 50},
        },
    )
    out = tmp_path / "out"
    argv = ["train", "realnvp", "--config", str(config), "--data", str(data), "--output_dir", str(out)]
    assert main([*argv, "--precision", "bfloat16", "--quiet"]) == 0
    stored = yaml.safe_load((out / "configs" / "realnvp.yaml").read_text())
    assert stored["training"]["precision"] == stored["sampling"]["precision"] == "bfloat16"
    assert stored["training"]["compile"] == stored["sampling"]["compile"] == "auto"
    ckpt = out / "checkpoints" / "realnvp.pt"
    # `sample` takes the run's stored precision unless told otherwise
    written = {}
    for name, extra in {
        "stored": [],
        "bf16": ["--precision", "bfloat16"],
        "f32": ["--precision", "float32"],
    }.items():
        target = tmp_path / f"{name}.csv"
        assert main(["sample", str(ckpt), "-n", "30", "-o", str(target), *extra]) == 0
        written[name] = target.read_text()
        assert len(written[name].splitlines()) == 31
    assert written["stored"] == written["bf16"] != written["f32"]
    # a config's compile: on is switched off from the command line
    raw = yaml.safe_load(config.read_text())
    raw["sampling"]["compile"] = "on"
    config.write_text(yaml.safe_dump(raw))
    out2 = tmp_path / "out2"
    argv2 = ["train", "realnvp", "--config", str(config), "--data", str(data), "--output_dir", str(out2)]
    assert main([*argv2, "--no-compile", "--quiet"]) == 0
    stored2 = yaml.safe_load((out2 / "configs" / "realnvp.yaml").read_text())
    assert stored2["training"]["compile"] == stored2["sampling"]["compile"] == "off"
    target = tmp_path / "s.csv"
    capsys.readouterr()
    with pytest.raises(SystemExit):
        main(["sample", str(ckpt), "-n", "3", "-o", str(target), "--precision", "half"])
    assert "--precision" in capsys.readouterr().err


def test_auto_compiles_only_long_bfloat16_ddpm_sampling():
    ddpm = DDPM.from_config(DDPMModelConfig(diffusion_steps=10, hidden_units=8, n_blocks=1), 2)
    flow = perturbed_flow(layers=2)
    long = COMPILE_WORTHWHILE_POINT_STEPS
    assert worth_compiling("auto", ddpm, long, 1, "bfloat16")
    assert not worth_compiling("auto", ddpm, long - 1, 1, "bfloat16")
    assert worth_compiling("auto", ddpm, long // 10, 0, "bfloat16")  # 0 steps: all 10 of the model's
    assert not worth_compiling("auto", ddpm, long, 1, "float32")  # measured: no faster in float32
    assert not worth_compiling("auto", flow, 10**9, 1, "bfloat16")
    assert worth_compiling("on", ddpm, 1, 1, "float32") and worth_compiling("on", flow, 1, 1, "float32")
    assert not worth_compiling("off", ddpm, 10**9, 2500, "bfloat16")
    with pytest.raises(ValueError, match="auto, on or off"):
        worth_compiling("sometimes", ddpm, 1, 1, "float32")


@pytest.mark.parametrize("native", [True, False])
def test_auto_precision_is_bfloat16_where_native_and_samples_so_only_compiled(
    monkeypatch: pytest.MonkeyPatch, native: bool
) -> None:
    import genmodels.train.acceleration as acceleration

    monkeypatch.setattr(acceleration, "native_bfloat16", lambda device_type: native)
    monkeypatch.setattr(acceleration, "compiler_available", lambda device, warn=True: True)
    fast = "bfloat16" if native else "float32"
    assert resolve_precision("auto", "cpu") == fast
    assert [resolve_precision(p, "cpu") for p in ("float32", "bfloat16")] == ["float32", "bfloat16"]
    with autocast("cpu", "auto"):
        product = torch.nn.Linear(4, 4)(torch.randn(3, 4))
    assert product.dtype == (torch.bfloat16 if native else torch.float32)
    ddpm = DDPM.from_config(DDPMModelConfig(diffusion_steps=10, hidden_units=8, n_blocks=1), 2)
    long = COMPILE_WORTHWHILE_POINT_STEPS
    assert sampling_plan("auto", "auto", ddpm, long, 1) == (native, fast)
    # uncompiled bfloat16 sampling is slower than float32's: auto keeps float32 there, a request does not
    assert sampling_plan("auto", "auto", ddpm, long - 1, 1) == (False, "float32")
    assert sampling_plan("auto", "bfloat16", ddpm, long - 1, 1) == (False, "bfloat16")
    assert sampling_plan("off", "auto", ddpm, long, 1) == (False, "float32")
    assert sampling_plan("auto", "auto", perturbed_flow(layers=2), 10**9, 1) == (False, "float32")
    for model in (perturbed_flow(layers=2), ddpm):  # both models train in bfloat16 where it is native
        trainer = Trainer(model, TrainingConfig(epochs=1, batch_size=64), progress=False)
        trainer.fit(torch.randn(64, 2))
        assert trainer.precision == fast


def test_auto_compiles_training_only_where_measured_to_win(monkeypatch: pytest.MonkeyPatch) -> None:
    import genmodels.train.acceleration as acceleration

    monkeypatch.setattr(acceleration, "compiler_available", lambda device, warn=True: True)
    ddpm = DDPM.from_config(DDPMModelConfig(diffusion_steps=10, hidden_units=8, n_blocks=1), 2)
    flow = perturbed_flow(layers=2)

    class MyFlow(RealNVP):
        pass

    long = TRAINING_COMPILE_WORTHWHILE_POINTS
    assert 500 * 58_982 >= long  # the default run on the shipped data compiles
    for precision in ("float32", "bfloat16"):
        assert worth_compiling_training("auto", flow, "cpu", long, precision)
        assert worth_compiling_training("auto", MyFlow(2, n_coupling_layers=2), "cpu", long, precision)
        assert not worth_compiling_training("auto", flow, "cpu", long - 1, precision)
        assert not worth_compiling_training("auto", flow, "cuda", long, precision)  # not measured there
        assert not worth_compiling_training("auto", torch.nn.Linear(2, 2), "cpu", long, precision)
    for precision in ("float32", "bfloat16"):  # measured: 0-10% faster, not sure to repay compiling
        assert not worth_compiling_training("auto", ddpm, "cpu", 10**12, precision)
    assert worth_compiling_training("on", ddpm, "cuda", 1, "float32")
    assert not worth_compiling_training("off", flow, "cpu", 10**12, "bfloat16")
    with pytest.raises(ValueError, match="auto, on or off"):
        worth_compiling_training("yes", flow, "cpu", long, "float32")
    # without a C++ compiler, auto stays eager and says nothing (on would warn)
    monkeypatch.setattr(acceleration, "compiler_available", lambda device, warn=True: False)
    assert not worth_compiling_training("auto", flow, "cpu", long, "float32")
    assert not worth_compiling("auto", ddpm, COMPILE_WORTHWHILE_POINT_STEPS, 1, "bfloat16")


def test_trainer_with_auto_compiles_when_the_whole_run_is_long_enough(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import genmodels.train.acceleration as acceleration
    import genmodels.train.trainer as training

    compiled: list[object] = []

    def fake_compile(fn, device):  # noqa: ANN001, ANN202
        compiled.append(fn)
        return lambda *args: fn(*args)

    monkeypatch.setattr(acceleration, "compiler_available", lambda device, warn=True: True)
    monkeypatch.setattr(training, "compile_function", fake_compile)
    monkeypatch.setattr(acceleration, "TRAINING_COMPILE_WORTHWHILE_POINTS", 3000)
    data = gaussian_data(1024)
    assert TrainingConfig().compile == "auto"
    fit(perturbed_flow(layers=2), data, epochs=4, compile="off")  # off: eager, however long the run
    assert compiled == []
    with caplog.at_level("INFO"):
        trainer = fit(perturbed_flow(layers=2), data, epochs=2)  # the default, auto; 2,048 points
    assert compiled == [] and "compiled loss" not in caplog.text
    said = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("training eagerly"))
    assert "3e+03" in said and "2e+03" in said  # what auto needs, and what this run passes
    caplog.clear()
    with caplog.at_level("INFO"):
        fit(perturbed_flow(layers=2), data, epochs=2, compile="off")  # asked for: nothing to explain
    assert "training eagerly" not in caplog.text
    # continued to 3 epochs, the whole run passes 3,072 points: it compiles, as an unbroken one would
    trainer.config = TrainingConfig(**{**trainer.config.__dict__, "epochs": 3})
    with caplog.at_level("INFO"):
        trainer.fit(data)
    assert len(compiled) == 1 and trainer.epoch == 3
    assert "training with a compiled loss (training.compile: auto)" in caplog.text
    fit(perturbed_flow(layers=2), data, epochs=3, compile="off")
    assert len(compiled) == 1
    # where compile_function hands back the eager loss (no compiler), nothing claims it compiled
    caplog.clear()
    monkeypatch.setattr(training, "compile_function", lambda fn, device: fn)
    with caplog.at_level("INFO"):
        fit(perturbed_flow(layers=2), data, epochs=3, compile="on")
    assert "compiled loss" not in caplog.text


def test_a_failing_compilation_runs_eagerly_after_one_warning(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from torch._dynamo.exc import TorchDynamoException

    import genmodels.train.acceleration as acceleration

    calls = []

    def broken(fn, device):  # noqa: ANN001, ANN202 - as torch.compile fails without a working compiler
        def run(*args, **kwargs):  # noqa: ANN202
            calls.append(1)
            raise TorchDynamoException("InvalidCxxCompiler: No working C++ compiler found")

        return run

    monkeypatch.setattr(acceleration, "compiler_available", lambda device, warn=True: True)
    monkeypatch.setattr(acceleration, "_compile", broken)
    flow = perturbed_flow(layers=2)
    x = gaussian_data(64)
    with caplog.at_level("WARNING"):
        loss = compile_function(flow.loss, "cpu")
        values = [loss(x) for _ in range(3)]
        model = DDPM.from_config(DDPMModelConfig(diffusion_steps=5, hidden_units=8, n_blocks=1), 2).eval()
        eager = model.sample(16, generator=torch.Generator().manual_seed(0))
        with compiled_network(model) as fast:
            same = fast.sample(16, generator=torch.Generator().manual_seed(0))
    assert all(torch.equal(v, flow.loss(x)) for v in values)
    torch.testing.assert_close(same, eager, rtol=0, atol=0)
    assert len(calls) == 2  # one failed attempt each; later calls go straight to the eager code
    warnings = [r.getMessage() for r in caplog.records if "could not compile" in r.getMessage()]
    assert len(warnings) == 2 and "No working C++ compiler" in warnings[0]
    # other errors are the function's own and are not swallowed
    monkeypatch.setattr(acceleration, "_compile", lambda fn, device: fn)
    with pytest.raises(ValueError):
        compile_function(lambda: (_ for _ in ()).throw(ValueError("bad")), "cpu")()


def test_a_compiler_that_does_not_work_gives_one_warning_not_tracebacks(tmp_path: Path) -> None:
    """A C++ compiler on the PATH that fails (here /bin/false): the run trains eagerly after one warning.
    In a fresh process, since torch remembers a working compiler once it has found one."""
    data, config = run_inputs(
        tmp_path,
        300,
        {
            "model": {"n_coupling_layers": 2, "hidden_units": 8},
            "training": {"epochs": 2, "batch_size": 64},
            "sampling": {"n_samples": 100, "n_eval": 30},
        },
    )
    env = {**os.environ, "CXX": "/bin/false", "TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "cache")}
    argv = [
        "train",
        "realnvp",
        "--config",
        str(config),
        "--data",
        str(data),
        "--output_dir",
        str(tmp_path / "o"),
    ]
    code = "import sys; from genmodels.cli import main; sys.exit(main(sys.argv[1:]))"
    run = subprocess.run(
        [sys.executable, "-c", code, *argv, "--compile", "--quiet"], env=env, capture_output=True, text=True
    )
    assert run.returncode == 0, run.stderr[-2000:]
    output = run.stdout + run.stderr
    assert output.count("could not compile") == 1, output[-3000:]
    assert "Traceback" not in output and "WON'T CONVERT" not in output
    assert (tmp_path / "o" / "checkpoints" / "realnvp.pt").exists()


@needs_compiler
def test_ddpm_run_with_compiled_sampling_writes_every_output(tmp_path: Path) -> None:
    data, config = run_inputs(
        tmp_path,
        400,
        {
            "model": {"diffusion_steps": 8, "hidden_units": 16, "n_blocks": 1},
            "training": {"epochs": 1, "batch_size": 128},
            "sampling": {"n_samples": 300, "n_eval": 40, "compile": "on", "precision": "bfloat16"},
        },
    )
    out = tmp_path / "out"
    argv = [
        "train",
        "ddpm",
        "--config",
        str(config),
        "--data",
        str(data),
        "--output_dir",
        str(out),
        "--quiet",
    ]
    assert main(argv) == 0
    for name in ("ddpm_results.png", "ddpm_loss.png"):
        assert (out / "figures" / name).stat().st_size > 0
    samples = (out / "samples" / "ddpm.csv").read_text().splitlines()
    assert len(samples) == 301
    payload = torch.load(out / "checkpoints" / "ddpm.pt", weights_only=True)
    assert not any("_orig_mod" in key for key in payload["model"])


def test_without_a_cpp_compiler_compilation_is_skipped_with_one_warning(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import genmodels.train.acceleration as acceleration

    monkeypatch.setenv("CXX", "/nonexistent/g++")
    monkeypatch.setattr(acceleration, "_COMPILER_WARNED", False)
    flow = perturbed_flow(layers=2)
    with caplog.at_level("WARNING"):
        assert acceleration.compile_function(flow.loss, "cpu") == flow.loss
        model = DDPM.from_config(DDPMModelConfig(diffusion_steps=5, hidden_units=8, n_blocks=1), 2)
        network = model.network
        with compiled_network(model) as same:
            assert same.network is network
    warnings = [r for r in caplog.records if "C++ compiler" in r.getMessage()]
    assert len(warnings) == 1 and "CXX=/nonexistent/g++" in warnings[0].getMessage()


def test_threads_offered_during_compiled_training_wait_until_the_rest_of_the_run_repays_a_recompile() -> None:
    """Outside compiled training an offer of threads is taken at once; inside it waits, and the trainer
    takes it where a quarter of the training time left exceeds the compilation time; leaving the loop
    takes what is still waiting."""
    from genmodels.train import acceleration

    threads = torch.get_num_threads()
    trainer = Trainer(RealNVP(2, n_coupling_layers=2, hidden_units=8), TrainingConfig(epochs=100))
    trainer.epoch = 60  # 40 epochs left
    try:
        acceleration.offer_threads(1)
        assert torch.get_num_threads() == threads + 1
        torch.set_num_threads(threads)
        with acceleration.deferring_threads(True):
            acceleration.offer_threads(2)
            assert torch.get_num_threads() == threads and acceleration.threads_offered() == 2
            trainer._take_threads_if_worth_it(epoch_seconds=1.0, compile_seconds=12.0)  # 10 s saved < 12
            assert torch.get_num_threads() == threads and acceleration.threads_offered() == 2
            trainer._take_threads_if_worth_it(epoch_seconds=1.0, compile_seconds=8.0)  # 10 s saved > 8
            assert torch.get_num_threads() == threads + 2 and acceleration.threads_offered() == 0
            acceleration.offer_threads(1)
        assert torch.get_num_threads() == threads + 3 and acceleration.threads_offered() == 0
    finally:
        torch.set_num_threads(threads)
