from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class AudioEncoding(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    AUDIO_ENCODING_UNSPECIFIED: _ClassVar[AudioEncoding]
    LINEAR_PCM: _ClassVar[AudioEncoding]
    MULAW: _ClassVar[AudioEncoding]
    ALAW: _ClassVar[AudioEncoding]
AUDIO_ENCODING_UNSPECIFIED: AudioEncoding
LINEAR_PCM: AudioEncoding
MULAW: AudioEncoding
ALAW: AudioEncoding

class SessionConfig(_message.Message):
    __slots__ = ("sample_rate_hz", "encoding", "output_sample_rate_hz", "output_encoding", "voice", "instructions", "language_code", "manual_turns")
    SAMPLE_RATE_HZ_FIELD_NUMBER: _ClassVar[int]
    ENCODING_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_SAMPLE_RATE_HZ_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_ENCODING_FIELD_NUMBER: _ClassVar[int]
    VOICE_FIELD_NUMBER: _ClassVar[int]
    INSTRUCTIONS_FIELD_NUMBER: _ClassVar[int]
    LANGUAGE_CODE_FIELD_NUMBER: _ClassVar[int]
    MANUAL_TURNS_FIELD_NUMBER: _ClassVar[int]
    sample_rate_hz: int
    encoding: AudioEncoding
    output_sample_rate_hz: int
    output_encoding: AudioEncoding
    voice: str
    instructions: str
    language_code: str
    manual_turns: bool
    def __init__(self, sample_rate_hz: _Optional[int] = ..., encoding: _Optional[_Union[AudioEncoding, str]] = ..., output_sample_rate_hz: _Optional[int] = ..., output_encoding: _Optional[_Union[AudioEncoding, str]] = ..., voice: _Optional[str] = ..., instructions: _Optional[str] = ..., language_code: _Optional[str] = ..., manual_turns: _Optional[bool] = ...) -> None: ...

class Commit(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Cancel(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ConverseRequest(_message.Message):
    __slots__ = ("config", "audio", "text", "commit", "cancel")
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    AUDIO_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    COMMIT_FIELD_NUMBER: _ClassVar[int]
    CANCEL_FIELD_NUMBER: _ClassVar[int]
    config: SessionConfig
    audio: bytes
    text: str
    commit: Commit
    cancel: Cancel
    def __init__(self, config: _Optional[_Union[SessionConfig, _Mapping]] = ..., audio: _Optional[bytes] = ..., text: _Optional[str] = ..., commit: _Optional[_Union[Commit, _Mapping]] = ..., cancel: _Optional[_Union[Cancel, _Mapping]] = ...) -> None: ...

class SessionStarted(_message.Message):
    __slots__ = ("session_id", "input_sample_rate_hz", "output_sample_rate_hz", "voice", "input_encoding", "output_encoding")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    INPUT_SAMPLE_RATE_HZ_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_SAMPLE_RATE_HZ_FIELD_NUMBER: _ClassVar[int]
    VOICE_FIELD_NUMBER: _ClassVar[int]
    INPUT_ENCODING_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_ENCODING_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    input_sample_rate_hz: int
    output_sample_rate_hz: int
    voice: str
    input_encoding: AudioEncoding
    output_encoding: AudioEncoding
    def __init__(self, session_id: _Optional[str] = ..., input_sample_rate_hz: _Optional[int] = ..., output_sample_rate_hz: _Optional[int] = ..., voice: _Optional[str] = ..., input_encoding: _Optional[_Union[AudioEncoding, str]] = ..., output_encoding: _Optional[_Union[AudioEncoding, str]] = ...) -> None: ...

class SpeechStarted(_message.Message):
    __slots__ = ("audio_start_ms", "item_id")
    AUDIO_START_MS_FIELD_NUMBER: _ClassVar[int]
    ITEM_ID_FIELD_NUMBER: _ClassVar[int]
    audio_start_ms: int
    item_id: str
    def __init__(self, audio_start_ms: _Optional[int] = ..., item_id: _Optional[str] = ...) -> None: ...

class SpeechStopped(_message.Message):
    __slots__ = ("audio_end_ms", "item_id")
    AUDIO_END_MS_FIELD_NUMBER: _ClassVar[int]
    ITEM_ID_FIELD_NUMBER: _ClassVar[int]
    audio_end_ms: int
    item_id: str
    def __init__(self, audio_end_ms: _Optional[int] = ..., item_id: _Optional[str] = ...) -> None: ...

class Transcript(_message.Message):
    __slots__ = ("item_id", "text", "is_final")
    ITEM_ID_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    IS_FINAL_FIELD_NUMBER: _ClassVar[int]
    item_id: str
    text: str
    is_final: bool
    def __init__(self, item_id: _Optional[str] = ..., text: _Optional[str] = ..., is_final: _Optional[bool] = ...) -> None: ...

class ResponseText(_message.Message):
    __slots__ = ("response_id", "delta")
    RESPONSE_ID_FIELD_NUMBER: _ClassVar[int]
    DELTA_FIELD_NUMBER: _ClassVar[int]
    response_id: str
    delta: str
    def __init__(self, response_id: _Optional[str] = ..., delta: _Optional[str] = ...) -> None: ...

class ResponseAudio(_message.Message):
    __slots__ = ("response_id", "audio")
    RESPONSE_ID_FIELD_NUMBER: _ClassVar[int]
    AUDIO_FIELD_NUMBER: _ClassVar[int]
    response_id: str
    audio: bytes
    def __init__(self, response_id: _Optional[str] = ..., audio: _Optional[bytes] = ...) -> None: ...

class ResponseDone(_message.Message):
    __slots__ = ("response_id", "status", "text")
    class Status(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        STATUS_UNSPECIFIED: _ClassVar[ResponseDone.Status]
        COMPLETED: _ClassVar[ResponseDone.Status]
        INTERRUPTED: _ClassVar[ResponseDone.Status]
        CANCELLED: _ClassVar[ResponseDone.Status]
        FAILED: _ClassVar[ResponseDone.Status]
    STATUS_UNSPECIFIED: ResponseDone.Status
    COMPLETED: ResponseDone.Status
    INTERRUPTED: ResponseDone.Status
    CANCELLED: ResponseDone.Status
    FAILED: ResponseDone.Status
    RESPONSE_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    response_id: str
    status: ResponseDone.Status
    text: str
    def __init__(self, response_id: _Optional[str] = ..., status: _Optional[_Union[ResponseDone.Status, str]] = ..., text: _Optional[str] = ...) -> None: ...

class Error(_message.Message):
    __slots__ = ("code", "message")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    code: str
    message: str
    def __init__(self, code: _Optional[str] = ..., message: _Optional[str] = ...) -> None: ...

class ConverseResponse(_message.Message):
    __slots__ = ("session_started", "speech_started", "speech_stopped", "transcript", "response_text", "response_audio", "response_done", "error")
    SESSION_STARTED_FIELD_NUMBER: _ClassVar[int]
    SPEECH_STARTED_FIELD_NUMBER: _ClassVar[int]
    SPEECH_STOPPED_FIELD_NUMBER: _ClassVar[int]
    TRANSCRIPT_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_TEXT_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_AUDIO_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_DONE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    session_started: SessionStarted
    speech_started: SpeechStarted
    speech_stopped: SpeechStopped
    transcript: Transcript
    response_text: ResponseText
    response_audio: ResponseAudio
    response_done: ResponseDone
    error: Error
    def __init__(self, session_started: _Optional[_Union[SessionStarted, _Mapping]] = ..., speech_started: _Optional[_Union[SpeechStarted, _Mapping]] = ..., speech_stopped: _Optional[_Union[SpeechStopped, _Mapping]] = ..., transcript: _Optional[_Union[Transcript, _Mapping]] = ..., response_text: _Optional[_Union[ResponseText, _Mapping]] = ..., response_audio: _Optional[_Union[ResponseAudio, _Mapping]] = ..., response_done: _Optional[_Union[ResponseDone, _Mapping]] = ..., error: _Optional[_Union[Error, _Mapping]] = ...) -> None: ...
