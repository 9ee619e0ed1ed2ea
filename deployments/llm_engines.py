"""vLLM engines served by Ray Serve's own LLM stack (``ray.serve.llm``), inside voxray's app.

Each entry of the app config's ``llm_engines`` is a ``ray.serve.llm.LLMConfig`` (model,
``engine_kwargs``, ``deployment_config`` with autoscaling, placement, LoRA, ...). ``build_app``
turns each into an ``LLMServer`` deployment named :func:`engine_deployment_name`, and the LLM
deployment's ``serve_llm`` backend streams chat from it through a deployment handle.

``ray.serve.llm`` needs ``ray[llm]``'s dependencies (vLLM, pyarrow, ...), which a CPU-only
install does not have, so this module imports it only when an engine is configured.
"""

from __future__ import annotations

from typing import Any

ENGINE_NAME_PREFIX = "vLLM:"


def engine_deployment_name(model_id: str) -> str:
    """The Serve deployment name of the engine serving ``model_id``.

    The same rule as ``ray.serve.llm.build_llm_deployment``'s (``/`` → ``--``, ``.`` → ``_``)
    with voxray's prefix, so the name can be computed without importing ``ray.serve.llm``.
    """
    return ENGINE_NAME_PREFIX + model_id.replace("/", "--").replace(".", "_")


def engine_model_id(engine: dict[str, Any]) -> str:
    """The ``model_id`` of one ``llm_engines`` entry (a plain ``LLMConfig`` dict).

    Raises:
        ValueError: the entry names no ``model_loading_config.model_id``.
    """
    loading = engine.get("model_loading_config")
    model_id = loading.get("model_id") if isinstance(loading, dict) else None
    if not isinstance(model_id, str) or not model_id:
        raise ValueError("each llm_engines entry needs model_loading_config.model_id")
    return model_id


def check_engine_config(engine: dict[str, Any]) -> None:
    """Validate one ``llm_engines`` entry with ``ray.serve.llm.LLMConfig`` where it is installed.

    Without ``ray[llm]`` (a CPU-only install) only the ``model_id`` is checked: the full
    check runs again in the replica, where the engine's dependencies must be present anyway.

    Raises:
        ValueError: the entry is invalid.
    """
    engine_model_id(engine)
    try:
        from ray.serve.llm import LLMConfig
    except ImportError:
        return
    LLMConfig.model_validate(engine)


def build_engine_deployments(engines: list[dict[str, Any]]) -> dict[str, Any]:
    """One bound ``LLMServer`` deployment per entry, keyed by ``model_id``.

    Args:
        engines: ``llm_engines`` entries (``ray.serve.llm.LLMConfig`` dicts).

    Returns:
        ``{model_id: Application}``, to bind into the LLM deployment so Serve deploys them.
    """
    from ray.serve.llm import LLMConfig, build_llm_deployment

    from deployments.vllm_server import VoxrayLLMServer

    built: dict[str, Any] = {}
    for engine in engines:
        config = LLMConfig.model_validate(engine)
        name = engine_deployment_name(config.model_id)
        built[config.model_id] = build_llm_deployment(
            config,
            deployment_cls=VoxrayLLMServer,
            name_prefix="",
            override_serve_options={"name": name},
        )
    return built
