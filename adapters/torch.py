"""PyTorch adapter: TorchScript files, ``torch.export`` ``.pt2`` programs, ``module:factory``.

Declared preprocessing comes from a sidecar ``<stem>.json`` beside the file (keys
labels, input_size, color, range, mean, std, layout, resize, output) and/or overrides.
Loading never unpickles arbitrary objects unless ``allow_pickle=True``
(``--allow-pickle``): state dicts load with ``torch.load(weights_only=True)``.
"""
from __future__ import annotations

import importlib
import importlib.util
import sys
import zipfile
from pathlib import Path

import numpy as np

from xaudit.errors import ModelLoadError, XauditError
from xaudit.model import Model

from . import labels_beside, parse_input_size, preprocessing_with, read_labels, read_sidecar, sha256_of


class TorchModel(Model):
    """Any torch ``nn.Module`` (eager, TorchScript, or an exported program's module)."""

    def __init__(self, module, *, source, format, labels=None, input_size=None, preprocessing=None,
                 output_kind="auto", extra_info=None):
        import torch
        self.module = module
        self.format = format
        if hasattr(module, "eval"):
            try:
                module.eval()
            except Exception:  # noqa: BLE001 - exported programs' modules may refuse eval()
                pass
        if input_size is None:
            raise ModelLoadError(f"{source}: the input size is unknown; pass --input-size H,W "
                                 "(or put it in a <model>.json sidecar)")
        self._setup(source=source, labels=labels, input_size=input_size, preprocessing=preprocessing,
                    output_kind=output_kind, extra_info=extra_info,
                    inputs=[{"name": "input", "layout": preprocessing.layout, "dtype": "float32"}],
                    outputs=[{"name": "output", "dtype": "float32"}])
        self._torch = torch
        self._diff = None

    def _forward_native(self, native):
        torch = self._torch
        with torch.inference_mode():
            out = self.module(torch.from_numpy(np.ascontiguousarray(native)))
        if isinstance(out, (tuple, list)):
            out = out[0]
        if isinstance(out, dict):
            out = next(iter(out.values()))
        return out.detach().float().cpu().numpy()

    def _check_gradients(self):
        from xaudit.white_box import for_torch_module
        self._diff = for_torch_module(self.module, self.preprocessing, self.input_size)
        return True, f"PyTorch {self.format} module: {self._diff.notes}"

    def _differentiable(self):
        return self._diff


def _import_factory(spec: str):
    mod_name, _, attr = spec.rpartition(":")
    try:
        if mod_name.endswith(".py") and Path(mod_name).is_file():
            name = "xaudit_user_" + Path(mod_name).stem
            s = importlib.util.spec_from_file_location(name, mod_name)
            mod = importlib.util.module_from_spec(s)
            sys.modules[name] = mod
            s.loader.exec_module(mod)
        else:
            mod = importlib.import_module(mod_name)
    except ImportError as e:
        raise ModelLoadError(f"cannot import module {mod_name!r} for {spec!r}: {e}") from None
    fn = mod
    for part in attr.split("."):
        if not hasattr(fn, part):
            raise ModelLoadError(f"{mod_name!r} has no attribute {attr!r} (expected module:factory)")
        fn = getattr(fn, part)
    return fn


def _load_state_dict(path, allow_pickle):
    import torch
    p = Path(path)
    if not p.is_file():
        raise ModelLoadError(f"weights file not found: {p}")
    try:
        obj = torch.load(p, map_location="cpu", weights_only=not allow_pickle)
    except Exception as e:  # noqa: BLE001
        hint = "" if allow_pickle else " (if it holds pickled objects and you trust it: --allow-pickle)"
        raise ModelLoadError(f"cannot load weights {p}: {str(e).splitlines()[0]}{hint}") from None
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise ModelLoadError(f"weights file {p} does not hold a state dict")
    return obj


def _is_torch_save_zip(p: Path) -> bool:
    try:
        with zipfile.ZipFile(p) as z:
            names = z.namelist()
    except (zipfile.BadZipFile, OSError):
        return False
    return any(n.endswith("data.pkl") for n in names) and not any(n.endswith("constants.pkl") for n in names)


def _input_size_from_program(ep):
    """(input_size, layout, fixed_batch) from the exported program's example input."""
    def static(d):
        try:
            return int(d)
        except Exception:  # noqa: BLE001 - symbolic dimension
            return None
    try:
        for node in ep.graph.nodes:
            if node.op == "placeholder" and node.name in ep.graph_signature.user_inputs:
                dims = [static(d) for d in node.meta["val"].shape]
                if len(dims) == 4 and None not in dims[1:]:
                    nchw = dims[1] in (1, 3)
                    return ((dims[2], dims[3]) if nchw else (dims[1], dims[2])), ("NCHW" if nchw else "NHWC"), dims[0]
    except Exception:  # noqa: BLE001 - fall back to the sidecar/overrides
        pass
    return None, None, None


def load(source, **ov) -> TorchModel:
    import torch
    source = str(source)
    allow_pickle = bool(ov.get("allow_pickle"))
    p = Path(source)
    if ":" in source and not p.exists():  # module:factory
        factory = _import_factory(source)
        try:
            module = factory()
        except Exception as e:  # noqa: BLE001
            raise ModelLoadError(f"factory {source!r} failed: {type(e).__name__}: {e}") from None
        if not isinstance(module, torch.nn.Module):
            raise ModelLoadError(f"factory {source!r} returned {type(module).__name__}, not a torch.nn.Module")
        sidecar = {}
        if ov.get("weights"):
            sd = _load_state_dict(ov["weights"], allow_pickle)
            try:
                module.load_state_dict(sd)
            except RuntimeError as e:
                raise ModelLoadError(f"weights {ov['weights']} do not fit {source}: {str(e).splitlines()[0]}") from None
            sidecar = read_sidecar(Path(ov["weights"]))
        fixed_batch = None
        fmt, sha = "torch", (sha256_of(ov["weights"]) if ov.get("weights") else None)
        extra = {"factory": source}
        fallback_labels = None
        layout_default = None
        size_default = None
    else:
        if not p.is_file():
            raise ModelLoadError(f"model file not found: {p}")
        sidecar = read_sidecar(p)
        sha = sha256_of(p)
        extra = {}
        layout_default = size_default = fixed_batch = None
        if p.suffix == ".pt2":
            try:
                ep = torch.export.load(str(p))
            except Exception as e:  # noqa: BLE001
                raise ModelLoadError(f"cannot load torch.export program {p}: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
            size_default, layout_default, fixed_batch = _input_size_from_program(ep)
            module, fmt = ep.module(), "torch_export"
        else:
            try:
                module, fmt = torch.jit.load(str(p), map_location="cpu"), "torchscript"
            except Exception as e:  # noqa: BLE001
                if _is_torch_save_zip(p):
                    if not allow_pickle:
                        raise ModelLoadError(
                            f"{p} is a pickled PyTorch file (torch.save), not TorchScript: loading it can run "
                            "arbitrary code; pass --allow-pickle if you trust it, or give module:factory with "
                            "--factory-weights") from None
                    try:
                        obj = torch.load(str(p), map_location="cpu", weights_only=False)
                    except Exception as e2:  # noqa: BLE001
                        raise ModelLoadError(f"cannot unpickle {p}: {e2}") from None
                    if not isinstance(obj, torch.nn.Module):
                        raise ModelLoadError(f"{p} holds a {type(obj).__name__}, not a torch.nn.Module "
                                             "(a state dict needs module:factory with --factory-weights)")
                    module, fmt = obj, "torch"
                else:
                    msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                    raise ModelLoadError(f"cannot load {p} as TorchScript (corrupt or not a model?): {msg}") from None
        fallback_labels = labels_beside(p)
    labels = read_labels(ov["labels"]) if ov.get("labels") is not None else (
        read_labels(sidecar["labels"]) if sidecar.get("labels") is not None else fallback_labels)
    input_size = parse_input_size(ov.get("input_size")) or parse_input_size(sidecar.get("input_size")) or size_default
    defaults = dict(sidecar)
    if layout_default and "layout" not in defaults:
        defaults["layout"] = layout_default
    pre = preprocessing_with(defaults, ov)
    m = TorchModel(module, source=source, format=fmt, labels=labels, input_size=input_size, preprocessing=pre,
                   output_kind=ov.get("output_kind") or sidecar.get("output_kind") or "auto", extra_info=extra)
    m.fixed_batch = fixed_batch
    m.sha256 = sha
    return m
