from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ErrorCode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ERROR_CODE_UNSPECIFIED: _ClassVar[ErrorCode]
    INVALID_ARGUMENT: _ClassVar[ErrorCode]
    PAYLOAD_TOO_LARGE: _ClassVar[ErrorCode]
    NOT_FOUND: _ClassVar[ErrorCode]
    MALFORMED: _ClassVar[ErrorCode]
    UNAUTHENTICATED: _ClassVar[ErrorCode]
    PERMISSION_DENIED: _ClassVar[ErrorCode]
    ALREADY_EXISTS: _ClassVar[ErrorCode]
    UNAVAILABLE: _ClassVar[ErrorCode]
    EXPIRED: _ClassVar[ErrorCode]
    INVALID_TOPIC: _ClassVar[ErrorCode]
    INVALID_TENSOR: _ClassVar[ErrorCode]
    RESOURCE_EXHAUSTED: _ClassVar[ErrorCode]
ERROR_CODE_UNSPECIFIED: ErrorCode
INVALID_ARGUMENT: ErrorCode
PAYLOAD_TOO_LARGE: ErrorCode
NOT_FOUND: ErrorCode
MALFORMED: ErrorCode
UNAUTHENTICATED: ErrorCode
PERMISSION_DENIED: ErrorCode
ALREADY_EXISTS: ErrorCode
UNAVAILABLE: ErrorCode
EXPIRED: ErrorCode
INVALID_TOPIC: ErrorCode
INVALID_TENSOR: ErrorCode
RESOURCE_EXHAUSTED: ErrorCode

class Tensor(_message.Message):
    __slots__ = ("dtype", "shape", "data", "space", "family")
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    SPACE_FIELD_NUMBER: _ClassVar[int]
    FAMILY_FIELD_NUMBER: _ClassVar[int]
    dtype: str
    shape: _containers.RepeatedScalarFieldContainer[int]
    data: bytes
    space: str
    family: str
    def __init__(self, dtype: _Optional[str] = ..., shape: _Optional[_Iterable[int]] = ..., data: _Optional[bytes] = ..., space: _Optional[str] = ..., family: _Optional[str] = ...) -> None: ...

class Control(_message.Message):
    __slots__ = ("kind", "args")
    KIND_FIELD_NUMBER: _ClassVar[int]
    ARGS_FIELD_NUMBER: _ClassVar[int]
    kind: str
    args: _struct_pb2.Struct
    def __init__(self, kind: _Optional[str] = ..., args: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class Envelope(_message.Message):
    __slots__ = ("id", "topic", "sender", "recipient", "correlation_id", "reply_to", "headers", "created_at_ns", "ttl_ms", "text", "tensor", "control")
    class HeadersEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    TOPIC_FIELD_NUMBER: _ClassVar[int]
    SENDER_FIELD_NUMBER: _ClassVar[int]
    RECIPIENT_FIELD_NUMBER: _ClassVar[int]
    CORRELATION_ID_FIELD_NUMBER: _ClassVar[int]
    REPLY_TO_FIELD_NUMBER: _ClassVar[int]
    HEADERS_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_NS_FIELD_NUMBER: _ClassVar[int]
    TTL_MS_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    TENSOR_FIELD_NUMBER: _ClassVar[int]
    CONTROL_FIELD_NUMBER: _ClassVar[int]
    id: str
    topic: str
    sender: str
    recipient: str
    correlation_id: str
    reply_to: str
    headers: _containers.ScalarMap[str, str]
    created_at_ns: int
    ttl_ms: int
    text: str
    tensor: Tensor
    control: Control
    def __init__(self, id: _Optional[str] = ..., topic: _Optional[str] = ..., sender: _Optional[str] = ..., recipient: _Optional[str] = ..., correlation_id: _Optional[str] = ..., reply_to: _Optional[str] = ..., headers: _Optional[_Mapping[str, str]] = ..., created_at_ns: _Optional[int] = ..., ttl_ms: _Optional[int] = ..., text: _Optional[str] = ..., tensor: _Optional[_Union[Tensor, _Mapping]] = ..., control: _Optional[_Union[Control, _Mapping]] = ...) -> None: ...

class Hello(_message.Message):
    __slots__ = ("agent", "session_id", "receive_window", "token", "subscriptions", "client", "group_subscriptions")
    AGENT_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    RECEIVE_WINDOW_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    SUBSCRIPTIONS_FIELD_NUMBER: _ClassVar[int]
    CLIENT_FIELD_NUMBER: _ClassVar[int]
    GROUP_SUBSCRIPTIONS_FIELD_NUMBER: _ClassVar[int]
    agent: str
    session_id: str
    receive_window: int
    token: str
    subscriptions: _containers.RepeatedScalarFieldContainer[str]
    client: str
    group_subscriptions: _containers.RepeatedCompositeFieldContainer[GroupSubscription]
    def __init__(self, agent: _Optional[str] = ..., session_id: _Optional[str] = ..., receive_window: _Optional[int] = ..., token: _Optional[str] = ..., subscriptions: _Optional[_Iterable[str]] = ..., client: _Optional[str] = ..., group_subscriptions: _Optional[_Iterable[_Union[GroupSubscription, _Mapping]]] = ...) -> None: ...

class GroupSubscription(_message.Message):
    __slots__ = ("group", "filter")
    GROUP_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    group: str
    filter: str
    def __init__(self, group: _Optional[str] = ..., filter: _Optional[str] = ...) -> None: ...

class Welcome(_message.Message):
    __slots__ = ("session_id", "resumed", "publish_window", "publish_window_bytes", "max_message_bytes", "max_frame_bytes", "hub_id", "groups")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    RESUMED_FIELD_NUMBER: _ClassVar[int]
    PUBLISH_WINDOW_FIELD_NUMBER: _ClassVar[int]
    PUBLISH_WINDOW_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_MESSAGE_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_FRAME_BYTES_FIELD_NUMBER: _ClassVar[int]
    HUB_ID_FIELD_NUMBER: _ClassVar[int]
    GROUPS_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    resumed: bool
    publish_window: int
    publish_window_bytes: int
    max_message_bytes: int
    max_frame_bytes: int
    hub_id: str
    groups: bool
    def __init__(self, session_id: _Optional[str] = ..., resumed: _Optional[bool] = ..., publish_window: _Optional[int] = ..., publish_window_bytes: _Optional[int] = ..., max_message_bytes: _Optional[int] = ..., max_frame_bytes: _Optional[int] = ..., hub_id: _Optional[str] = ..., groups: _Optional[bool] = ...) -> None: ...

class Publish(_message.Message):
    __slots__ = ("seq", "envelope")
    SEQ_FIELD_NUMBER: _ClassVar[int]
    ENVELOPE_FIELD_NUMBER: _ClassVar[int]
    seq: int
    envelope: Envelope
    def __init__(self, seq: _Optional[int] = ..., envelope: _Optional[_Union[Envelope, _Mapping]] = ...) -> None: ...

class Deliver(_message.Message):
    __slots__ = ("seq", "envelope", "redelivered", "group")
    SEQ_FIELD_NUMBER: _ClassVar[int]
    ENVELOPE_FIELD_NUMBER: _ClassVar[int]
    REDELIVERED_FIELD_NUMBER: _ClassVar[int]
    GROUP_FIELD_NUMBER: _ClassVar[int]
    seq: int
    envelope: Envelope
    redelivered: bool
    group: str
    def __init__(self, seq: _Optional[int] = ..., envelope: _Optional[_Union[Envelope, _Mapping]] = ..., redelivered: _Optional[bool] = ..., group: _Optional[str] = ...) -> None: ...

class Rejection(_message.Message):
    __slots__ = ("seq", "code", "reason", "limit")
    SEQ_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    seq: int
    code: ErrorCode
    reason: str
    limit: int
    def __init__(self, seq: _Optional[int] = ..., code: _Optional[_Union[ErrorCode, str]] = ..., reason: _Optional[str] = ..., limit: _Optional[int] = ...) -> None: ...

class Ack(_message.Message):
    __slots__ = ("seqs", "rejections")
    SEQS_FIELD_NUMBER: _ClassVar[int]
    REJECTIONS_FIELD_NUMBER: _ClassVar[int]
    seqs: _containers.RepeatedScalarFieldContainer[int]
    rejections: _containers.RepeatedCompositeFieldContainer[Rejection]
    def __init__(self, seqs: _Optional[_Iterable[int]] = ..., rejections: _Optional[_Iterable[_Union[Rejection, _Mapping]]] = ...) -> None: ...

class Subscribe(_message.Message):
    __slots__ = ("request_id", "filters", "group")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    FILTERS_FIELD_NUMBER: _ClassVar[int]
    GROUP_FIELD_NUMBER: _ClassVar[int]
    request_id: int
    filters: _containers.RepeatedScalarFieldContainer[str]
    group: str
    def __init__(self, request_id: _Optional[int] = ..., filters: _Optional[_Iterable[str]] = ..., group: _Optional[str] = ...) -> None: ...

class Unsubscribe(_message.Message):
    __slots__ = ("request_id", "filters", "group")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    FILTERS_FIELD_NUMBER: _ClassVar[int]
    GROUP_FIELD_NUMBER: _ClassVar[int]
    request_id: int
    filters: _containers.RepeatedScalarFieldContainer[str]
    group: str
    def __init__(self, request_id: _Optional[int] = ..., filters: _Optional[_Iterable[str]] = ..., group: _Optional[str] = ...) -> None: ...

class SubscribeAck(_message.Message):
    __slots__ = ("request_id", "code", "reason")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    request_id: int
    code: ErrorCode
    reason: str
    def __init__(self, request_id: _Optional[int] = ..., code: _Optional[_Union[ErrorCode, str]] = ..., reason: _Optional[str] = ...) -> None: ...

class Error(_message.Message):
    __slots__ = ("code", "reason")
    CODE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    code: ErrorCode
    reason: str
    def __init__(self, code: _Optional[_Union[ErrorCode, str]] = ..., reason: _Optional[str] = ...) -> None: ...

class Bye(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Drain(_message.Message):
    __slots__ = ("reason",)
    REASON_FIELD_NUMBER: _ClassVar[int]
    reason: str
    def __init__(self, reason: _Optional[str] = ...) -> None: ...

class Frame(_message.Message):
    __slots__ = ("payload_size", "hello", "welcome", "publish", "deliver", "publish_ack", "delivery_ack", "subscribe", "unsubscribe", "subscribe_ack", "error", "bye", "drain")
    PAYLOAD_SIZE_FIELD_NUMBER: _ClassVar[int]
    HELLO_FIELD_NUMBER: _ClassVar[int]
    WELCOME_FIELD_NUMBER: _ClassVar[int]
    PUBLISH_FIELD_NUMBER: _ClassVar[int]
    DELIVER_FIELD_NUMBER: _ClassVar[int]
    PUBLISH_ACK_FIELD_NUMBER: _ClassVar[int]
    DELIVERY_ACK_FIELD_NUMBER: _ClassVar[int]
    SUBSCRIBE_FIELD_NUMBER: _ClassVar[int]
    UNSUBSCRIBE_FIELD_NUMBER: _ClassVar[int]
    SUBSCRIBE_ACK_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    BYE_FIELD_NUMBER: _ClassVar[int]
    DRAIN_FIELD_NUMBER: _ClassVar[int]
    payload_size: int
    hello: Hello
    welcome: Welcome
    publish: Publish
    deliver: Deliver
    publish_ack: Ack
    delivery_ack: Ack
    subscribe: Subscribe
    unsubscribe: Unsubscribe
    subscribe_ack: SubscribeAck
    error: Error
    bye: Bye
    drain: Drain
    def __init__(self, payload_size: _Optional[int] = ..., hello: _Optional[_Union[Hello, _Mapping]] = ..., welcome: _Optional[_Union[Welcome, _Mapping]] = ..., publish: _Optional[_Union[Publish, _Mapping]] = ..., deliver: _Optional[_Union[Deliver, _Mapping]] = ..., publish_ack: _Optional[_Union[Ack, _Mapping]] = ..., delivery_ack: _Optional[_Union[Ack, _Mapping]] = ..., subscribe: _Optional[_Union[Subscribe, _Mapping]] = ..., unsubscribe: _Optional[_Union[Unsubscribe, _Mapping]] = ..., subscribe_ack: _Optional[_Union[SubscribeAck, _Mapping]] = ..., error: _Optional[_Union[Error, _Mapping]] = ..., bye: _Optional[_Union[Bye, _Mapping]] = ..., drain: _Optional[_Union[Drain, _Mapping]] = ...) -> None: ...

class WireBatch(_message.Message):
    __slots__ = ("frames",)
    FRAMES_FIELD_NUMBER: _ClassVar[int]
    frames: bytes
    def __init__(self, frames: _Optional[bytes] = ...) -> None: ...
