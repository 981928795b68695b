"""``ecotaxa features``, ``backbone``, ``models``, ``fine-tune``, ``train`` and ``predict``."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Optional

import typer

from ecotaxa_cli.common import (
    JsonOpt,
    app,
    backbone_app,
    load_settings,
    models_app,
    run_command,
    run_flow,
)
from ecotaxa_core.errors import EcoTaxaError


@app.command()
def features(
    project: int = typer.Argument(..., help="Project id."),
    feature_set: Optional[list[str]] = typer.Option(
        None, "--set", help="Feature set to compute (repeatable): morpho, deep_effnetlite0, "
        "deep_NAME of a registered backbone (ecotaxa backbone list)."),
    recompute: bool = typer.Option(
        False, "--recompute", help="Delete the project's rows of these sets first and compute "
        "them again (after a change of extractor version or settings)."),
    as_json: bool = JsonOpt,
) -> None:
    """Compute the feature sets objects lack (runs the features flow on Dask)."""
    from flows.features import features_flow

    kwargs: dict[str, Any] = {"project_id": project, "recompute": recompute}
    if feature_set:
        kwargs["feature_sets"] = list(feature_set)
    run_flow(as_json, lambda: features_flow(**kwargs), _human_features)


def _human_features(r: dict[str, Any]) -> str:
    lines = []
    for name, s in (r.get("feature_sets") or {}).items():
        lines.append(f"{name}: {s.get('objects', 0)} objects in {s.get('seconds', 0):.1f} s"
                     + (f" ({s['images_per_s']:.0f} images/s)" if s.get("images_per_s") else ""))
    return "\n".join(lines) or "nothing to compute: every object has its features"


@backbone_app.command("add")
def backbone_add(
    name: str = typer.Argument(..., help="Backbone name: its feature set is deep_NAME."),
    model: str = typer.Option(..., "--model", help="timm model name (e.g. convnext_nano)."),
    weights: Path = typer.Option(..., "--weights", help="Weights file: .safetensors, .pth, "
                                 ".bin (a state dict; the classifier's weights are dropped)."),
    mean: Optional[str] = typer.Option(None, help="Normalisation mean, three numbers "
                                       "'r,g,b' on 0-1 pixels (default: timm's for the model)."),
    std: Optional[str] = typer.Option(None, help="Normalisation std, 'r,g,b' (default: timm's)."),
    replace: bool = typer.Option(False, "--replace", help="Replace a backbone of that name."),
    as_json: bool = JsonOpt,
) -> None:
    """Register a timm backbone after loading its weights once (strictly)."""
    from ecotaxa_core.features.backbones import BackboneError, register_backbone

    settings = load_settings()

    def triple(text: Optional[str], what: str):
        if text is None:
            return None
        try:
            values = tuple(float(v) for v in text.split(","))
        except ValueError:
            values = ()
        if len(values) != 3:
            raise BackboneError(f"--{what} must be three numbers 'r,g,b', got {text!r}")
        return values

    def go() -> dict[str, Any]:
        spec = register_backbone(settings.backbones_path, name, model, weights,
                                 mean=triple(mean, "mean"), std=triple(std, "std"),
                                 replace=replace)
        return {"feature_set": spec.feature_set, **spec.to_dict(),
                "file": str(settings.backbones_path)}

    run_command(as_json, go, lambda r: f"{r['feature_set']}: timm {r['model']}, {r['n_features']} "
         f"features, weights {r['weights']} (listed in {r['file']})")


@backbone_app.command("list")
def backbone_list(as_json: bool = JsonOpt) -> None:
    """The registered backbones and their feature sets."""
    from ecotaxa_core.features.backbones import read_backbones

    settings = load_settings()
    run_command(as_json, lambda: {"backbones": [
        {"feature_set": fs, **spec.to_dict()}
        for fs, spec in read_backbones(settings.backbones_path).items()]},
         lambda r: "\n".join(f"{b['feature_set']}: timm {b['model']}, {b['n_features']} "
                             f"features, {b['weights']}" for b in r["backbones"])
         or "no backbone registered (ecotaxa backbone add)")


def _models_query(fn: Callable[[Any, Any], dict[str, Any]]) -> Callable[[], dict[str, Any]]:
    """A ``_run`` body calling ``fn(instance, session)`` on the configured instance."""
    from ecotaxa_core.instance import Instance

    def go() -> dict[str, Any]:
        inst = Instance.open(load_settings())
        try:
            with inst.sessions() as session:
                return fn(inst, session)
        finally:
            inst.close()

    return go


def _fmt(value: Any, spec: str = ".3f") -> str:
    return "-" if value is None else format(value, spec)


_MODEL_COLUMNS = (("id", ">4", "id", "d"), ("kind", "<12", "kind", ""),
                  ("n_categories", ">5", "cats", "d"), ("n_objects", ">7", "objects", "d"),
                  ("accuracy", ">6", "acc", ".3f"), ("balanced_accuracy", ">6", "bal", ".3f"),
                  ("log_loss", ">6", "loss", ".3f"), ("plankton_precision", ">6", "pl.P", ".3f"),
                  ("plankton_recall", ">6", "pl.R", ".3f"), ("coverage", ">6", "cover", ".1%"),
                  ("fit_seconds", ">7", "fit s", ".1f"))


def _model_table(models: list[dict[str, Any]]) -> str:
    head = " ".join(format(title, width) for _, width, title, _ in _MODEL_COLUMNS) + "  name"
    rows = [" ".join(format(_fmt(m[key], spec), width) for key, width, _, spec in _MODEL_COLUMNS)
            + f"  {m['name']}" for m in models]
    return "\n".join([head, *rows])


@models_app.command("list")
def models_list(project: int = typer.Argument(..., help="Project id."),
                as_json: bool = JsonOpt) -> None:
    """The project's trained models, newest first, with their held-out quality.

    acc: accuracy, bal: balanced accuracy, loss: log loss, pl.P / pl.R: precision and
    recall weighted over plankton categories, cover: held-out objects above their
    category's score threshold.
    """
    from ecotaxa_core.learn.registry import list_model_summaries

    run_command(as_json, _models_query(lambda inst, s: {
        "project_id": project, "models": list_model_summaries(s, project)}),
         lambda r: _model_table(r["models"]) if r["models"]
         else f"project {r['project_id']} has no trained model (ecotaxa train {r['project_id']})")


@models_app.command("compare")
def models_compare(model_ids: list[int] = typer.Argument(..., help="Ids of the models to compare."),
                   as_json: bool = JsonOpt) -> None:
    """One row per model: accuracy, balanced accuracy, log loss, plankton precision/recall ..."""
    from ecotaxa_core.learn.registry import compare_models

    def human(r: dict[str, Any]) -> str:
        best = ", ".join(f"{k} {v}" for k, v in r["best"].items() if v is not None)
        note = ("\nmodels of different projects: their held-out parts differ"
                if len(r["projects"]) > 1 else "")
        return _model_table(r["models"]) + (f"\nbest: {best}" if best else "") + note

    run_command(as_json, _models_query(lambda inst, s: compare_models(s, model_ids)), human)


def _human_model_report(r: dict[str, Any]) -> str:
    m, t = r["summary"], r["thresholds"]
    lines = [f"model {m['id']} of project {m['project_id']}: {m['name']}",
             f"kind {m['kind']} on {', '.join(m['feature_sets'])}; {m['n_objects']} objects, "
             f"{m['n_categories']} categories; created {m['created_at'][:16].replace('T', ' ')}"
             + (f" by {m['created_by']}" if m["created_by"] else ""),
             f"file: {r['path']}"]
    if m["accuracy"] is None:
        lines.append(f"no held-out evaluation: {r['metrics'].get('reason', 'unknown')}")
        return "\n".join(lines)
    met = r["metrics"]
    lines.append(f"held-out ({met.get('n_test')} objects): accuracy {_fmt(m['accuracy'])}, "
                 f"balanced accuracy {_fmt(m['balanced_accuracy'])}, log loss "
                 f"{_fmt(m['log_loss'])}")
    lines.append(f"weighted precision / recall / F1: {_fmt(met.get('weighted_precision'))} / "
                 f"{_fmt(met.get('weighted_recall'))} / {_fmt(met.get('weighted_f1'))}; "
                 f"plankton only: {_fmt(met.get('plankton_weighted_precision'))} / "
                 f"{_fmt(met.get('plankton_weighted_recall'))} / "
                 f"{_fmt(met.get('plankton_weighted_f1'))}")
    lines.append(f"macro precision / recall: {_fmt(met.get('macro_precision'))} / "
                 f"{_fmt(met.get('macro_recall'))}; plankton only: "
                 f"{_fmt(met.get('plankton_macro_precision'))} / "
                 f"{_fmt(met.get('plankton_macro_recall'))}")
    if t:
        lines.append(f"score thresholds for precision {t['target_precision']:g}: "
                     f"{t['n_categories_with_threshold']} categories; "
                     f"{_fmt(t['fraction_bulk_validatable'], '.1%')} of held-out objects above "
                     f"them, expected error rate {_fmt(t['expected_error_rate'], '.1%')}")
    lines.append(f"{'category':<32} {'support':>7} {'prec':>6} {'recall':>6} {'f1':>6} "
                 f"{'threshold':>9} {'cover':>6}")
    for c in r["per_class"]:
        lines.append(f"{c['category'][:32]:<32} {c['support']:>7} {_fmt(c['precision']):>6} "
                     f"{_fmt(c['recall']):>6} {_fmt(c['f1']):>6} {_fmt(c['threshold']):>9} "
                     f"{_fmt(c['threshold_coverage'], '.0%'):>6}")
    if any(c["threshold"] is None for c in r["per_class"]):
        lines.append("threshold -: none reaches the target precision with enough held-out "
                     "objects (--json gives each reason)")
    lines.append(f"confusion matrix plot: {r['confusion_matrix_png'] or 'none'}")
    return "\n".join(lines)


@models_app.command("show")
def models_show(model_id: int = typer.Argument(..., help="Model id."),
                as_json: bool = JsonOpt) -> None:
    """All held-out metrics of a model, its categories by support, thresholds, plot path."""
    from ecotaxa_core.learn.registry import model_report

    run_command(as_json, _models_query(lambda inst, s: model_report(s, inst.models_dir, model_id)),
         _human_model_report)


# The learning-set options that ``train`` and ``fine-tune`` share.
OtherProjectOpt = typer.Option(None, "--other-project",
                               help="Also learn from this project's validated objects.")
CategoryOpt = typer.Option(None, "--category",
                           help="Learn only this category (id or name; repeatable).")
AppearAsOpt = typer.Option(None, "--appear-as", help="CATEGORY=TARGET: learn CATEGORY's "
                           "objects as TARGET (usually its parent; ids or names; repeatable).")


def _learning_categories(category: Optional[list[str]], appear_as: Optional[list[str]]
                         ) -> tuple[Optional[list[int]], Optional[dict[int, int]]]:
    """``--category`` and ``--appear-as`` values (ids or names) as taxon ids."""
    if not category and not appear_as:
        return None, None
    from ecotaxa_core.instance import Instance
    from ecotaxa_core.taxonomy import taxon_by_id_or_name

    inst = Instance.open(load_settings())
    try:
        with inst.sessions() as s:
            categories = [taxon_by_id_or_name(s, c).id for c in category] if category else None
            mapping: Optional[dict[int, int]] = {} if appear_as else None
            for pair in appear_as or []:
                source, sep, target = pair.partition("=")
                if not sep or not source.strip() or not target.strip():
                    raise EcoTaxaError(f"--appear-as needs CATEGORY=TARGET, got {pair!r}")
                mapping[taxon_by_id_or_name(s, source).id] = taxon_by_id_or_name(s, target).id
    finally:
        inst.close()
    return categories, mapping


@app.command("fine-tune")
def fine_tune(
    project: int = typer.Argument(..., help="Project id."),
    name: str = typer.Option(..., "--name", help="The new backbone: its feature set is "
                             "deep_NAME (lower-case letters, digits, _)."),
    epochs: int = typer.Option(10, help="Most epochs."),
    input_size: int = typer.Option(128, help="Network input side in pixels (also used when "
                                   "extracting deep_NAME)."),
    device: str = typer.Option("auto", help="auto (a CUDA GPU when present), cpu, cuda, cuda:N."),
    max_per_category: Optional[int] = typer.Option(None, help="Cap of objects per category."),
    time_budget: Optional[float] = typer.Option(
        None, help="Seconds; training stops after the last epoch that fits in them (the "
        "learning rate decays to it)."),
    patience: int = typer.Option(3, help="Epochs without a better validation loss before "
                                 "stopping."),
    batch_size: int = typer.Option(64, help="Images per training step."),
    other_project: Optional[list[int]] = OtherProjectOpt,
    category: Optional[list[str]] = CategoryOpt,
    appear_as: Optional[list[str]] = AppearAsOpt,
    compute_features: bool = typer.Option(
        False, "--compute-features", help="Then compute deep_NAME for the project."),
    as_json: bool = JsonOpt,
) -> None:
    """Fine-tune EfficientNet-Lite0 + 600 bottleneck on the validated objects; register it
    as backbone NAME (feature set deep_NAME) for the features flow and the classifiers."""
    from flows.fine_tune import fine_tune_flow

    def go() -> dict[str, Any]:
        categories, mapping = _learning_categories(category, appear_as)
        return fine_tune_flow(
            project_id=project, name=name, epochs=epochs, input_size=input_size, device=device,
            max_per_category=max_per_category, time_budget_s=time_budget, patience=patience,
            batch_size=batch_size, other_project_ids=list(other_project or []),
            categories=categories, appear_as=mapping, compute_features=compute_features)

    run_flow(as_json, go,
          lambda r: f"{r['feature_set']}: {r['epochs_run']} epochs on {r['device']} (best "
                    f"{r['best_epoch']}, stopped: {r['stopped']}), validation accuracy "
                    f"{r['validation']['accuracy']:.3f}, log loss "
                    f"{r['validation']['log_loss']:.3f}, {r['train_images_per_s']} images/s; "
                    f"weights {r['weights']}"
                    + (f"\n{_human_features(r['features'])}" if r.get("features") else ""))


@app.command()
def train(
    project: int = typer.Argument(..., help="Project id."),
    kind: Optional[list[str]] = typer.Option(
        None, "--kind", help="Model to train (repeatable): KIND or KIND:SET+SET, KIND among "
        "classic_rf, deep_logreg, deep_rf, deep_mlp, deep_logreg_rf (e.g. "
        "deep_logreg_rf:deep_effnetlite0+morpho). "
        "Default: the best model the features allow within --time-budget, and the baseline."),
    time_budget: Optional[float] = typer.Option(
        None, help="Minutes the training may take (the automatic choice fits within it)."),
    max_per_category: Optional[int] = typer.Option(None, help="Cap of objects per category."),
    other_project: Optional[list[int]] = OtherProjectOpt,
    category: Optional[list[str]] = CategoryOpt,
    appear_as: Optional[list[str]] = AppearAsOpt,
    seed: Optional[int] = typer.Option(None, help="Seed of the cap's choice and of the split."),
    test_size: Optional[float] = typer.Option(None, help="Held-out fraction of each category."),
    again: bool = typer.Option(False, "--again", help="Train even a model that was trained "
                                                      "the same way on the same learning set."),
    as_json: bool = JsonOpt,
) -> None:
    """Train classifiers on the validated objects (runs the training flow).

    Settings left out are those of the project's last training, else the defaults.
    A model trained the same way on the same learning set is kept, not trained again.
    """
    from flows.train import train_flow

    def go() -> dict[str, Any]:
        categories, mapping = _learning_categories(category, appear_as)
        return train_flow(project_id=project, candidates=list(kind) if kind else None,
                          time_budget_s=None if time_budget is None else time_budget * 60.0,
                          max_per_category=max_per_category,
                          other_project_ids=list(other_project) if other_project else None,
                          categories=categories, appear_as=mapping, seed=seed,
                          test_size=test_size, again=again)

    run_flow(as_json, go, _human_train)


def _human_train(r: dict[str, Any]) -> str:
    lines = []
    for m in r.get("models", []):
        met = m.get("metrics", {})
        if met.get("accuracy") is None:
            lines.append(f"model {m['model_id']} {m['kind']}: no held-out evaluation "
                         "(too few categories with 5 or more objects)")
            continue
        lines.append(f"model {m['model_id']} {m.get('candidate', m['kind'])} "
                     f"({m.get('role', 'asked')}): accuracy {met['accuracy']:.3f}, "
                     f"balanced accuracy {met['balanced_accuracy']:.3f}, log loss "
                     f"{met['log_loss']:.3f} (held-out {met.get('n_test', '?')} objects, "
                     f"{met.get('total_seconds') or 0:.0f} s)"
                     + ("; trained on this learning set before: kept" if m.get("reused") else ""))
    for s in r.get("skipped", []):
        lines.append(f"skipped {s}")
    for note in r.get("plan", {}).get("notes", []):
        lines.append(f"note: {note}")
    remembered = sorted(k for k, v in r.get("settings_origin", {}).items() if v == "remembered")
    if remembered:
        lines.append(f"from the last training: {', '.join(remembered)}")
    if r.get("best") is not None:
        lines.append(f"best model: {r['best']}")
    return "\n".join(lines)


@app.command()
def predict(
    project: int = typer.Argument(..., help="Project id."),
    model_id: Optional[int] = typer.Option(None, help="Model to use (default: the best one)."),
    again: bool = typer.Option(False, "--again",
                               help="Predict again the objects this model predicted already."),
    as_json: bool = JsonOpt,
) -> None:
    """Predict unclassified and predicted objects (runs the prediction flow on Dask).

    Objects the model predicted already keep their prediction: a second run with
    nothing new does nothing."""
    from flows.predict import predict_flow

    run_flow(as_json, lambda: predict_flow(project_id=project, model_id=model_id, again=again),
          lambda r: f"Predicted {r['n_predicted']} objects with model {r['model_id']} "
                    f"in {r['seconds']:.1f} s" + (
                        f" ({r['n_already_predicted']} predicted by it before kept)"
                        if r.get("n_already_predicted") else "") + (
                        f"; {r['n_above_threshold']} above their category's score threshold "
                        "(ecotaxa models show)" if r.get("n_above_threshold") is not None
                        else ""))
