"""MODEL-DIRECTORY INTEGRATION OF THE DISTILLED STUDENTS: the one place that reads and writes them.

(To be re-based on the typed model-directory schema of ``models/store.py``: everything a
student needs on disk is here, nothing elsewhere touches these files or this section.)

On disk::

    MODEL/student-N.safetensors    the student's Denoiser state dict (the keys of
                                   diffusion.safetensors), N = its network evaluations
    MODEL/config.json  "files":    {"student-N.safetensors": sha256, ...}
                       "student":  {"teacher_sha256": sha256 of the diffusion weights it was
                                    distilled from,
                                    "default_evaluations": N used by `run` / `predict`,
                                    "evaluations": {"N": {"weights": "student-N.safetensors",
                                                          "nodes": [log-SNR, ...],
                                                          "times": [T, ..., 0],
                                                          "training": {...},
                                                          "validation": {...}}}}

A student has the teacher's architecture and standardisation (the ``diffusion``
section); only its weights and time grid are its own. A student whose teacher_sha256
is not the current diffusion weights' (the teacher was retrained) is stale: it is not
loaded (a warning says so) and sampling falls back to the teacher.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from specdiff_catalog.models import store
from specdiff_catalog.models.diffusion import DiffusionModel
from specdiff_catalog.models.distill import StudentModel

log = logging.getLogger(__name__)

SECTION = "student"


def weights_file(evaluations: int) -> str:
    return f"student-{evaluations}.safetensors"


def save_student(
    model_dir: str | Path, student: StudentModel, *, teacher_sha256: str, default: bool = False, **extra: Any
) -> None:
    """Write MODEL/student-N.safetensors (sha256 recorded) and its entry in the ``student``
    section; ``extra`` (training, validation, ...) goes into the entry. The default
    evaluation count becomes N when ``default`` or when none is set yet; entries distilled
    from another teacher are dropped."""
    n = student.evaluations
    store.save_tensors(model_dir, weights_file(n), student.net.state_dict())
    config = store.read_config(model_dir)
    section = config.get(SECTION, {})
    entries = section.get("evaluations", {}) if section.get("teacher_sha256") == teacher_sha256 else {}
    entries[str(n)] = {
        "weights": weights_file(n),
        "nodes": list(student.nodes),
        "times": list(student.times),
        **extra,
    }
    keep_default = not default and str(section.get("default_evaluations")) in entries
    updated = {
        "teacher_sha256": teacher_sha256,
        "default_evaluations": int(section["default_evaluations"]) if keep_default else n,
        "evaluations": entries,
    }
    if keep_default and "default_n_samples" in section:
        updated["default_n_samples"] = section["default_n_samples"]
    store.update_config(model_dir, **{SECTION: updated})


def set_default(model_dir: str | Path, evaluations: int, n_samples: int | None = None) -> None:
    """Make the N-evaluation student (and optionally a sample count) the production default."""
    config = store.read_config(model_dir)
    section = dict(config.get(SECTION, {}))
    if str(evaluations) not in section.get("evaluations", {}):
        raise store.ModelDirectoryError(
            f"{model_dir}: no {evaluations}-evaluation student to make the default"
        )
    section["default_evaluations"] = evaluations
    if n_samples is not None:
        section["default_n_samples"] = n_samples
    store.update_config(model_dir, **{SECTION: section})


def current(config: dict[str, Any]) -> dict[str, Any] | None:
    """The ``student`` section if it belongs to the current diffusion weights, else None."""
    section = config.get(SECTION)
    if not section or "diffusion" not in config:
        return None
    teacher = config.get("files", {}).get(config["diffusion"].get("weights", "diffusion.safetensors"))
    return section if section.get("teacher_sha256") == teacher else None


def resolve_sampling(
    config: dict[str, Any], sampler: str, steps: int | None, n_samples: int | None, fallback_samples: int
) -> tuple[str, int | None, int]:
    """(sampler, steps, n_samples) made concrete for a model's config.json.

    sampler "auto": the default student when the model has a current one, else dpmpp2m.
    "student": steps are its network evaluations (default: the default student's); a
    model without that student is an error. n_samples None: the default recorded with
    the students (``set_default``) when sampling a student, else ``fallback_samples``.
    """
    section = current(config)
    if sampler == "auto":
        sampler = "student" if section else "dpmpp2m"
    if sampler == "student":
        if section is None:
            raise ValueError("the model has no distilled student (run `train distill`), or it is stale")
        steps = int(section["default_evaluations"]) if steps is None else steps
        if str(steps) not in section["evaluations"]:
            raise ValueError(
                f"the model has no {steps}-evaluation student; it has {sorted(section['evaluations'])}"
            )
        if n_samples is None:
            n_samples = int(section.get("default_n_samples", fallback_samples))
    return sampler, steps, fallback_samples if n_samples is None else n_samples


def load_students(
    model_dir: str | Path, config: dict[str, Any], teacher: DiffusionModel, device: str | torch.device = "cpu"
) -> dict[int, StudentModel]:
    """The verified students of a model directory by evaluations ({} without a current section)."""
    section = config.get(SECTION)
    if section and current(config) is None:
        log.warning(
            "%s: the distilled students were made from other diffusion weights (retrained since); "
            "ignoring them: sampling uses the teacher until `train distill` is run again",
            model_dir,
        )
        return {}
    students = {}
    for n, entry in (section or {}).get("evaluations", {}).items():
        model = DiffusionModel(teacher.config, teacher.standardisation)
        model.net.load_state_dict(store.load_tensors(model_dir, entry["weights"]))
        students[int(n)] = StudentModel(model.to(device).eval(), entry["nodes"])
    return students
