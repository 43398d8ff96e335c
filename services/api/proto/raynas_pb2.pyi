from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class SearchState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SEARCH_STATE_UNSPECIFIED: _ClassVar[SearchState]
    PENDING: _ClassVar[SearchState]
    RUNNING: _ClassVar[SearchState]
    SUCCEEDED: _ClassVar[SearchState]
    FAILED: _ClassVar[SearchState]
    CANCELLED: _ClassVar[SearchState]

class Algorithm(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ALGORITHM_UNSPECIFIED: _ClassVar[Algorithm]
    PPO: _ClassVar[Algorithm]
    REINFORCE: _ClassVar[Algorithm]
    RANDOM: _ClassVar[Algorithm]
    REA: _ClassVar[Algorithm]

class SearchSpace(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SEARCH_SPACE_UNSPECIFIED: _ClassVar[SearchSpace]
    ENAS_MACRO: _ClassVar[SearchSpace]
    ENAS_MICRO: _ClassVar[SearchSpace]
    NB201: _ClassVar[SearchSpace]

class Evaluator(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    EVALUATOR_UNSPECIFIED: _ClassVar[Evaluator]
    SUPERNET: _ClassVar[Evaluator]
    TABLE: _ClassVar[Evaluator]
SEARCH_STATE_UNSPECIFIED: SearchState
PENDING: SearchState
RUNNING: SearchState
SUCCEEDED: SearchState
FAILED: SearchState
CANCELLED: SearchState
ALGORITHM_UNSPECIFIED: Algorithm
PPO: Algorithm
REINFORCE: Algorithm
RANDOM: Algorithm
REA: Algorithm
SEARCH_SPACE_UNSPECIFIED: SearchSpace
ENAS_MACRO: SearchSpace
ENAS_MICRO: SearchSpace
NB201: SearchSpace
EVALUATOR_UNSPECIFIED: Evaluator
SUPERNET: Evaluator
TABLE: Evaluator

class SearchSpec(_message.Message):
    __slots__ = ("preset", "space", "algorithm", "evaluator", "budget", "seed", "epochs", "workers", "gpus_per_worker", "table", "reward_key", "data_dir", "yaml_overrides")
    PRESET_FIELD_NUMBER: _ClassVar[int]
    SPACE_FIELD_NUMBER: _ClassVar[int]
    ALGORITHM_FIELD_NUMBER: _ClassVar[int]
    EVALUATOR_FIELD_NUMBER: _ClassVar[int]
    BUDGET_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    EPOCHS_FIELD_NUMBER: _ClassVar[int]
    WORKERS_FIELD_NUMBER: _ClassVar[int]
    GPUS_PER_WORKER_FIELD_NUMBER: _ClassVar[int]
    TABLE_FIELD_NUMBER: _ClassVar[int]
    REWARD_KEY_FIELD_NUMBER: _ClassVar[int]
    DATA_DIR_FIELD_NUMBER: _ClassVar[int]
    YAML_OVERRIDES_FIELD_NUMBER: _ClassVar[int]
    preset: str
    space: SearchSpace
    algorithm: Algorithm
    evaluator: Evaluator
    budget: int
    seed: int
    epochs: int
    workers: int
    gpus_per_worker: float
    table: str
    reward_key: str
    data_dir: str
    yaml_overrides: str
    def __init__(self, preset: _Optional[str] = ..., space: _Optional[_Union[SearchSpace, str]] = ..., algorithm: _Optional[_Union[Algorithm, str]] = ..., evaluator: _Optional[_Union[Evaluator, str]] = ..., budget: _Optional[int] = ..., seed: _Optional[int] = ..., epochs: _Optional[int] = ..., workers: _Optional[int] = ..., gpus_per_worker: _Optional[float] = ..., table: _Optional[str] = ..., reward_key: _Optional[str] = ..., data_dir: _Optional[str] = ..., yaml_overrides: _Optional[str] = ...) -> None: ...

class SubmitSearchRequest(_message.Message):
    __slots__ = ("spec", "name", "idempotency_key")
    SPEC_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    spec: SearchSpec
    name: str
    idempotency_key: str
    def __init__(self, spec: _Optional[_Union[SearchSpec, _Mapping]] = ..., name: _Optional[str] = ..., idempotency_key: _Optional[str] = ...) -> None: ...

class Progress(_message.Message):
    __slots__ = ("search_id", "state", "epoch", "archs_sampled", "has_best", "best_reward", "best_arch", "updated_at")
    SEARCH_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    ARCHS_SAMPLED_FIELD_NUMBER: _ClassVar[int]
    HAS_BEST_FIELD_NUMBER: _ClassVar[int]
    BEST_REWARD_FIELD_NUMBER: _ClassVar[int]
    BEST_ARCH_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    search_id: str
    state: SearchState
    epoch: int
    archs_sampled: int
    has_best: bool
    best_reward: float
    best_arch: str
    updated_at: float
    def __init__(self, search_id: _Optional[str] = ..., state: _Optional[_Union[SearchState, str]] = ..., epoch: _Optional[int] = ..., archs_sampled: _Optional[int] = ..., has_best: _Optional[bool] = ..., best_reward: _Optional[float] = ..., best_arch: _Optional[str] = ..., updated_at: _Optional[float] = ...) -> None: ...

class Search(_message.Message):
    __slots__ = ("id", "name", "state", "spec", "progress", "error", "job_id", "output_dir", "created_at", "updated_at", "idempotency_key")
    ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    SPEC_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_DIR_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    id: str
    name: str
    state: SearchState
    spec: SearchSpec
    progress: Progress
    error: str
    job_id: str
    output_dir: str
    created_at: float
    updated_at: float
    idempotency_key: str
    def __init__(self, id: _Optional[str] = ..., name: _Optional[str] = ..., state: _Optional[_Union[SearchState, str]] = ..., spec: _Optional[_Union[SearchSpec, _Mapping]] = ..., progress: _Optional[_Union[Progress, _Mapping]] = ..., error: _Optional[str] = ..., job_id: _Optional[str] = ..., output_dir: _Optional[str] = ..., created_at: _Optional[float] = ..., updated_at: _Optional[float] = ..., idempotency_key: _Optional[str] = ...) -> None: ...

class GetSearchRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class ListSearchesRequest(_message.Message):
    __slots__ = ("states", "name_prefix", "page_size", "page_token")
    STATES_FIELD_NUMBER: _ClassVar[int]
    NAME_PREFIX_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    states: _containers.RepeatedScalarFieldContainer[SearchState]
    name_prefix: str
    page_size: int
    page_token: str
    def __init__(self, states: _Optional[_Iterable[_Union[SearchState, str]]] = ..., name_prefix: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListSearchesResponse(_message.Message):
    __slots__ = ("searches", "next_page_token")
    SEARCHES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    searches: _containers.RepeatedCompositeFieldContainer[Search]
    next_page_token: str
    def __init__(self, searches: _Optional[_Iterable[_Union[Search, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class WatchSearchRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class CancelSearchRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class GetResultRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class Architecture(_message.Message):
    __slots__ = ("arch", "json", "reward", "metrics")
    class MetricsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    ARCH_FIELD_NUMBER: _ClassVar[int]
    JSON_FIELD_NUMBER: _ClassVar[int]
    REWARD_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    arch: str
    json: str
    reward: float
    metrics: _containers.ScalarMap[str, float]
    def __init__(self, arch: _Optional[str] = ..., json: _Optional[str] = ..., reward: _Optional[float] = ..., metrics: _Optional[_Mapping[str, float]] = ...) -> None: ...

class Result(_message.Message):
    __slots__ = ("search_id", "best", "top", "metrics", "output_dir", "files")
    class MetricsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    SEARCH_ID_FIELD_NUMBER: _ClassVar[int]
    BEST_FIELD_NUMBER: _ClassVar[int]
    TOP_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_DIR_FIELD_NUMBER: _ClassVar[int]
    FILES_FIELD_NUMBER: _ClassVar[int]
    search_id: str
    best: Architecture
    top: _containers.RepeatedCompositeFieldContainer[Architecture]
    metrics: _containers.ScalarMap[str, float]
    output_dir: str
    files: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, search_id: _Optional[str] = ..., best: _Optional[_Union[Architecture, _Mapping]] = ..., top: _Optional[_Iterable[_Union[Architecture, _Mapping]]] = ..., metrics: _Optional[_Mapping[str, float]] = ..., output_dir: _Optional[str] = ..., files: _Optional[_Iterable[str]] = ...) -> None: ...
