from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class GetStatsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class HubInfo(_message.Message):
    __slots__ = ("hub_id", "name", "started_at_ns", "sessions_connected", "sessions_detached", "connections", "published", "delivered", "rejected", "expired", "malformed", "publish_rate", "publish_byte_rate", "delivery_rate", "draining", "authenticates", "topics_tracked")
    HUB_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_NS_FIELD_NUMBER: _ClassVar[int]
    SESSIONS_CONNECTED_FIELD_NUMBER: _ClassVar[int]
    SESSIONS_DETACHED_FIELD_NUMBER: _ClassVar[int]
    CONNECTIONS_FIELD_NUMBER: _ClassVar[int]
    PUBLISHED_FIELD_NUMBER: _ClassVar[int]
    DELIVERED_FIELD_NUMBER: _ClassVar[int]
    REJECTED_FIELD_NUMBER: _ClassVar[int]
    EXPIRED_FIELD_NUMBER: _ClassVar[int]
    MALFORMED_FIELD_NUMBER: _ClassVar[int]
    PUBLISH_RATE_FIELD_NUMBER: _ClassVar[int]
    PUBLISH_BYTE_RATE_FIELD_NUMBER: _ClassVar[int]
    DELIVERY_RATE_FIELD_NUMBER: _ClassVar[int]
    DRAINING_FIELD_NUMBER: _ClassVar[int]
    AUTHENTICATES_FIELD_NUMBER: _ClassVar[int]
    TOPICS_TRACKED_FIELD_NUMBER: _ClassVar[int]
    hub_id: str
    name: str
    started_at_ns: int
    sessions_connected: int
    sessions_detached: int
    connections: int
    published: int
    delivered: int
    rejected: int
    expired: int
    malformed: int
    publish_rate: float
    publish_byte_rate: float
    delivery_rate: float
    draining: bool
    authenticates: bool
    topics_tracked: int
    def __init__(self, hub_id: _Optional[str] = ..., name: _Optional[str] = ..., started_at_ns: _Optional[int] = ..., sessions_connected: _Optional[int] = ..., sessions_detached: _Optional[int] = ..., connections: _Optional[int] = ..., published: _Optional[int] = ..., delivered: _Optional[int] = ..., rejected: _Optional[int] = ..., expired: _Optional[int] = ..., malformed: _Optional[int] = ..., publish_rate: _Optional[float] = ..., publish_byte_rate: _Optional[float] = ..., delivery_rate: _Optional[float] = ..., draining: _Optional[bool] = ..., authenticates: _Optional[bool] = ..., topics_tracked: _Optional[int] = ...) -> None: ...

class ListSessionsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class SessionInfo(_message.Message):
    __slots__ = ("agent", "session_id", "connected", "connected_at_ns", "subscriptions", "queued_messages", "queued_bytes", "unacked_messages", "unacked_bytes", "receive_window", "published", "publish_rate", "publish_byte_rate", "delivery_rate")
    AGENT_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    CONNECTED_FIELD_NUMBER: _ClassVar[int]
    CONNECTED_AT_NS_FIELD_NUMBER: _ClassVar[int]
    SUBSCRIPTIONS_FIELD_NUMBER: _ClassVar[int]
    QUEUED_MESSAGES_FIELD_NUMBER: _ClassVar[int]
    QUEUED_BYTES_FIELD_NUMBER: _ClassVar[int]
    UNACKED_MESSAGES_FIELD_NUMBER: _ClassVar[int]
    UNACKED_BYTES_FIELD_NUMBER: _ClassVar[int]
    RECEIVE_WINDOW_FIELD_NUMBER: _ClassVar[int]
    PUBLISHED_FIELD_NUMBER: _ClassVar[int]
    PUBLISH_RATE_FIELD_NUMBER: _ClassVar[int]
    PUBLISH_BYTE_RATE_FIELD_NUMBER: _ClassVar[int]
    DELIVERY_RATE_FIELD_NUMBER: _ClassVar[int]
    agent: str
    session_id: str
    connected: bool
    connected_at_ns: int
    subscriptions: _containers.RepeatedScalarFieldContainer[str]
    queued_messages: int
    queued_bytes: int
    unacked_messages: int
    unacked_bytes: int
    receive_window: int
    published: int
    publish_rate: float
    publish_byte_rate: float
    delivery_rate: float
    def __init__(self, agent: _Optional[str] = ..., session_id: _Optional[str] = ..., connected: _Optional[bool] = ..., connected_at_ns: _Optional[int] = ..., subscriptions: _Optional[_Iterable[str]] = ..., queued_messages: _Optional[int] = ..., queued_bytes: _Optional[int] = ..., unacked_messages: _Optional[int] = ..., unacked_bytes: _Optional[int] = ..., receive_window: _Optional[int] = ..., published: _Optional[int] = ..., publish_rate: _Optional[float] = ..., publish_byte_rate: _Optional[float] = ..., delivery_rate: _Optional[float] = ...) -> None: ...

class ListSessionsResponse(_message.Message):
    __slots__ = ("sessions",)
    SESSIONS_FIELD_NUMBER: _ClassVar[int]
    sessions: _containers.RepeatedCompositeFieldContainer[SessionInfo]
    def __init__(self, sessions: _Optional[_Iterable[_Union[SessionInfo, _Mapping]]] = ...) -> None: ...

class ListTopicsRequest(_message.Message):
    __slots__ = ("limit",)
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    limit: int
    def __init__(self, limit: _Optional[int] = ...) -> None: ...

class TopicInfo(_message.Message):
    __slots__ = ("topic", "messages", "bytes", "message_rate", "byte_rate")
    TOPIC_FIELD_NUMBER: _ClassVar[int]
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    BYTES_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_RATE_FIELD_NUMBER: _ClassVar[int]
    BYTE_RATE_FIELD_NUMBER: _ClassVar[int]
    topic: str
    messages: int
    bytes: int
    message_rate: float
    byte_rate: float
    def __init__(self, topic: _Optional[str] = ..., messages: _Optional[int] = ..., bytes: _Optional[int] = ..., message_rate: _Optional[float] = ..., byte_rate: _Optional[float] = ...) -> None: ...

class ListTopicsResponse(_message.Message):
    __slots__ = ("topics",)
    TOPICS_FIELD_NUMBER: _ClassVar[int]
    topics: _containers.RepeatedCompositeFieldContainer[TopicInfo]
    def __init__(self, topics: _Optional[_Iterable[_Union[TopicInfo, _Mapping]]] = ...) -> None: ...

class RecentMessagesRequest(_message.Message):
    __slots__ = ("filter", "limit")
    FILTER_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    filter: str
    limit: int
    def __init__(self, filter: _Optional[str] = ..., limit: _Optional[int] = ...) -> None: ...

class MessageHeader(_message.Message):
    __slots__ = ("id", "topic", "sender", "created_at_ns", "size", "kind", "dtype", "shape", "space", "family", "control_kind", "headers")
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
    CREATED_AT_NS_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    SPACE_FIELD_NUMBER: _ClassVar[int]
    FAMILY_FIELD_NUMBER: _ClassVar[int]
    CONTROL_KIND_FIELD_NUMBER: _ClassVar[int]
    HEADERS_FIELD_NUMBER: _ClassVar[int]
    id: str
    topic: str
    sender: str
    created_at_ns: int
    size: int
    kind: str
    dtype: str
    shape: _containers.RepeatedScalarFieldContainer[int]
    space: str
    family: str
    control_kind: str
    headers: _containers.ScalarMap[str, str]
    def __init__(self, id: _Optional[str] = ..., topic: _Optional[str] = ..., sender: _Optional[str] = ..., created_at_ns: _Optional[int] = ..., size: _Optional[int] = ..., kind: _Optional[str] = ..., dtype: _Optional[str] = ..., shape: _Optional[_Iterable[int]] = ..., space: _Optional[str] = ..., family: _Optional[str] = ..., control_kind: _Optional[str] = ..., headers: _Optional[_Mapping[str, str]] = ...) -> None: ...

class RecentMessagesResponse(_message.Message):
    __slots__ = ("messages",)
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    messages: _containers.RepeatedCompositeFieldContainer[MessageHeader]
    def __init__(self, messages: _Optional[_Iterable[_Union[MessageHeader, _Mapping]]] = ...) -> None: ...
