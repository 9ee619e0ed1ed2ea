from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class EventType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    EVENT_UNSPECIFIED: _ClassVar[EventType]
    LISTENING: _ClassVar[EventType]
    PROCESSING: _ClassVar[EventType]
    SPEAKING: _ClassVar[EventType]
    ERROR: _ClassVar[EventType]
    END_OF_TURN: _ClassVar[EventType]
EVENT_UNSPECIFIED: EventType
LISTENING: EventType
PROCESSING: EventType
SPEAKING: EventType
ERROR: EventType
END_OF_TURN: EventType

class ClientMessage(_message.Message):
    __slots__ = ("config", "audio_chunk", "text_input")
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    AUDIO_CHUNK_FIELD_NUMBER: _ClassVar[int]
    TEXT_INPUT_FIELD_NUMBER: _ClassVar[int]
    config: VoiceConfig
    audio_chunk: bytes
    text_input: str
    def __init__(self, config: _Optional[_Union[VoiceConfig, _Mapping]] = ..., audio_chunk: _Optional[bytes] = ..., text_input: _Optional[str] = ...) -> None: ...

class VoiceConfig(_message.Message):
    __slots__ = ("language_code", "session_id", "sample_rate")
    LANGUAGE_CODE_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_RATE_FIELD_NUMBER: _ClassVar[int]
    language_code: str
    session_id: str
    sample_rate: int
    def __init__(self, language_code: _Optional[str] = ..., session_id: _Optional[str] = ..., sample_rate: _Optional[int] = ...) -> None: ...

class ServerMessage(_message.Message):
    __slots__ = ("transcript_chunk", "llm_response_chunk", "audio_chunk", "event")
    TRANSCRIPT_CHUNK_FIELD_NUMBER: _ClassVar[int]
    LLM_RESPONSE_CHUNK_FIELD_NUMBER: _ClassVar[int]
    AUDIO_CHUNK_FIELD_NUMBER: _ClassVar[int]
    EVENT_FIELD_NUMBER: _ClassVar[int]
    transcript_chunk: str
    llm_response_chunk: str
    audio_chunk: bytes
    event: ServerEvent
    def __init__(self, transcript_chunk: _Optional[str] = ..., llm_response_chunk: _Optional[str] = ..., audio_chunk: _Optional[bytes] = ..., event: _Optional[_Union[ServerEvent, _Mapping]] = ...) -> None: ...

class ServerEvent(_message.Message):
    __slots__ = ("type", "message")
    TYPE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    type: EventType
    message: str
    def __init__(self, type: _Optional[_Union[EventType, str]] = ..., message: _Optional[str] = ...) -> None: ...
