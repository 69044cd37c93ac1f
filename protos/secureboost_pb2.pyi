from protos import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class SecureBoostStart(_message.Message):
    __slots__ = ("meta", "paillier_params", "n_rows", "pack_n_samples_max", "pack_precision_bits", "pack_g_bound", "pack_h_bound", "pack_slot_bits", "max_bin", "max_depth", "n_trees", "min_node_samples", "alignment_id", "rows", "resume_from_tree")
    META_FIELD_NUMBER: _ClassVar[int]
    PAILLIER_PARAMS_FIELD_NUMBER: _ClassVar[int]
    N_ROWS_FIELD_NUMBER: _ClassVar[int]
    PACK_N_SAMPLES_MAX_FIELD_NUMBER: _ClassVar[int]
    PACK_PRECISION_BITS_FIELD_NUMBER: _ClassVar[int]
    PACK_G_BOUND_FIELD_NUMBER: _ClassVar[int]
    PACK_H_BOUND_FIELD_NUMBER: _ClassVar[int]
    PACK_SLOT_BITS_FIELD_NUMBER: _ClassVar[int]
    MAX_BIN_FIELD_NUMBER: _ClassVar[int]
    MAX_DEPTH_FIELD_NUMBER: _ClassVar[int]
    N_TREES_FIELD_NUMBER: _ClassVar[int]
    MIN_NODE_SAMPLES_FIELD_NUMBER: _ClassVar[int]
    ALIGNMENT_ID_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    RESUME_FROM_TREE_FIELD_NUMBER: _ClassVar[int]
    meta: _common_pb2.RequestMeta
    paillier_params: bytes
    n_rows: int
    pack_n_samples_max: int
    pack_precision_bits: int
    pack_g_bound: float
    pack_h_bound: float
    pack_slot_bits: int
    max_bin: int
    max_depth: int
    n_trees: int
    min_node_samples: int
    alignment_id: str
    rows: bytes
    resume_from_tree: int
    def __init__(self, meta: _Optional[_Union[_common_pb2.RequestMeta, _Mapping]] = ..., paillier_params: _Optional[bytes] = ..., n_rows: _Optional[int] = ..., pack_n_samples_max: _Optional[int] = ..., pack_precision_bits: _Optional[int] = ..., pack_g_bound: _Optional[float] = ..., pack_h_bound: _Optional[float] = ..., pack_slot_bits: _Optional[int] = ..., max_bin: _Optional[int] = ..., max_depth: _Optional[int] = ..., n_trees: _Optional[int] = ..., min_node_samples: _Optional[int] = ..., alignment_id: _Optional[str] = ..., rows: _Optional[bytes] = ..., resume_from_tree: _Optional[int] = ...) -> None: ...

class SecureBoostStarted(_message.Message):
    __slots__ = ("n_features",)
    N_FEATURES_FIELD_NUMBER: _ClassVar[int]
    n_features: int
    def __init__(self, n_features: _Optional[int] = ...) -> None: ...

class SecureBoostGradients(_message.Message):
    __slots__ = ("meta", "tree", "blob_id", "samples", "n_samples", "streamed")
    META_FIELD_NUMBER: _ClassVar[int]
    TREE_FIELD_NUMBER: _ClassVar[int]
    BLOB_ID_FIELD_NUMBER: _ClassVar[int]
    SAMPLES_FIELD_NUMBER: _ClassVar[int]
    N_SAMPLES_FIELD_NUMBER: _ClassVar[int]
    STREAMED_FIELD_NUMBER: _ClassVar[int]
    meta: _common_pb2.RequestMeta
    tree: int
    blob_id: str
    samples: bytes
    n_samples: int
    streamed: bool
    def __init__(self, meta: _Optional[_Union[_common_pb2.RequestMeta, _Mapping]] = ..., tree: _Optional[int] = ..., blob_id: _Optional[str] = ..., samples: _Optional[bytes] = ..., n_samples: _Optional[int] = ..., streamed: _Optional[bool] = ...) -> None: ...

class SecureBoostGradientsAck(_message.Message):
    __slots__ = ("n_ciphertexts",)
    N_CIPHERTEXTS_FIELD_NUMBER: _ClassVar[int]
    n_ciphertexts: int
    def __init__(self, n_ciphertexts: _Optional[int] = ...) -> None: ...

class SecureBoostNodeRequest(_message.Message):
    __slots__ = ("node", "samples", "by_subtraction")
    NODE_FIELD_NUMBER: _ClassVar[int]
    SAMPLES_FIELD_NUMBER: _ClassVar[int]
    BY_SUBTRACTION_FIELD_NUMBER: _ClassVar[int]
    node: int
    samples: bytes
    by_subtraction: bool
    def __init__(self, node: _Optional[int] = ..., samples: _Optional[bytes] = ..., by_subtraction: _Optional[bool] = ...) -> None: ...

class SecureBoostHistogramRequest(_message.Message):
    __slots__ = ("meta", "tree", "depth", "nodes")
    META_FIELD_NUMBER: _ClassVar[int]
    TREE_FIELD_NUMBER: _ClassVar[int]
    DEPTH_FIELD_NUMBER: _ClassVar[int]
    NODES_FIELD_NUMBER: _ClassVar[int]
    meta: _common_pb2.RequestMeta
    tree: int
    depth: int
    nodes: _containers.RepeatedCompositeFieldContainer[SecureBoostNodeRequest]
    def __init__(self, meta: _Optional[_Union[_common_pb2.RequestMeta, _Mapping]] = ..., tree: _Optional[int] = ..., depth: _Optional[int] = ..., nodes: _Optional[_Iterable[_Union[SecureBoostNodeRequest, _Mapping]]] = ...) -> None: ...

class SecureBoostNodeHistogram(_message.Message):
    __slots__ = ("node", "split_ids", "ciphertexts", "groups")
    NODE_FIELD_NUMBER: _ClassVar[int]
    SPLIT_IDS_FIELD_NUMBER: _ClassVar[int]
    CIPHERTEXTS_FIELD_NUMBER: _ClassVar[int]
    GROUPS_FIELD_NUMBER: _ClassVar[int]
    node: int
    split_ids: _containers.RepeatedScalarFieldContainer[int]
    ciphertexts: bytes
    groups: _containers.RepeatedCompositeFieldContainer[SecureBoostCategoryGroup]
    def __init__(self, node: _Optional[int] = ..., split_ids: _Optional[_Iterable[int]] = ..., ciphertexts: _Optional[bytes] = ..., groups: _Optional[_Iterable[_Union[SecureBoostCategoryGroup, _Mapping]]] = ...) -> None: ...

class SecureBoostCategoryGroup(_message.Message):
    __slots__ = ("category_ids",)
    CATEGORY_IDS_FIELD_NUMBER: _ClassVar[int]
    category_ids: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, category_ids: _Optional[_Iterable[int]] = ...) -> None: ...

class SecureBoostHistogramReply(_message.Message):
    __slots__ = ("nodes",)
    NODES_FIELD_NUMBER: _ClassVar[int]
    nodes: _containers.RepeatedCompositeFieldContainer[SecureBoostNodeHistogram]
    def __init__(self, nodes: _Optional[_Iterable[_Union[SecureBoostNodeHistogram, _Mapping]]] = ...) -> None: ...

class SecureBoostApplySplit(_message.Message):
    __slots__ = ("meta", "tree", "node", "split_ids", "rows", "category_ids")
    META_FIELD_NUMBER: _ClassVar[int]
    TREE_FIELD_NUMBER: _ClassVar[int]
    NODE_FIELD_NUMBER: _ClassVar[int]
    SPLIT_IDS_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    CATEGORY_IDS_FIELD_NUMBER: _ClassVar[int]
    meta: _common_pb2.RequestMeta
    tree: int
    node: int
    split_ids: _containers.RepeatedScalarFieldContainer[int]
    rows: bytes
    category_ids: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, meta: _Optional[_Union[_common_pb2.RequestMeta, _Mapping]] = ..., tree: _Optional[int] = ..., node: _Optional[int] = ..., split_ids: _Optional[_Iterable[int]] = ..., rows: _Optional[bytes] = ..., category_ids: _Optional[_Iterable[int]] = ...) -> None: ...

class SecureBoostPartition(_message.Message):
    __slots__ = ("left",)
    LEFT_FIELD_NUMBER: _ClassVar[int]
    left: bytes
    def __init__(self, left: _Optional[bytes] = ...) -> None: ...

class SecureBoostTreeShape(_message.Message):
    __slots__ = ("tree", "leaves")
    TREE_FIELD_NUMBER: _ClassVar[int]
    LEAVES_FIELD_NUMBER: _ClassVar[int]
    tree: int
    leaves: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, tree: _Optional[int] = ..., leaves: _Optional[_Iterable[int]] = ...) -> None: ...

class SecureBoostFinish(_message.Message):
    __slots__ = ("meta", "abort", "trees")
    META_FIELD_NUMBER: _ClassVar[int]
    ABORT_FIELD_NUMBER: _ClassVar[int]
    TREES_FIELD_NUMBER: _ClassVar[int]
    meta: _common_pb2.RequestMeta
    abort: bool
    trees: _containers.RepeatedCompositeFieldContainer[SecureBoostTreeShape]
    def __init__(self, meta: _Optional[_Union[_common_pb2.RequestMeta, _Mapping]] = ..., abort: _Optional[bool] = ..., trees: _Optional[_Iterable[_Union[SecureBoostTreeShape, _Mapping]]] = ...) -> None: ...

class SecureBoostFinished(_message.Message):
    __slots__ = ("n_splits", "part_sha256")
    N_SPLITS_FIELD_NUMBER: _ClassVar[int]
    PART_SHA256_FIELD_NUMBER: _ClassVar[int]
    n_splits: int
    part_sha256: str
    def __init__(self, n_splits: _Optional[int] = ..., part_sha256: _Optional[str] = ...) -> None: ...

class SecureBoostPredictRequest(_message.Message):
    __slots__ = ("meta", "rows", "alignment_id")
    META_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    ALIGNMENT_ID_FIELD_NUMBER: _ClassVar[int]
    meta: _common_pb2.RequestMeta
    rows: _containers.RepeatedScalarFieldContainer[int]
    alignment_id: str
    def __init__(self, meta: _Optional[_Union[_common_pb2.RequestMeta, _Mapping]] = ..., rows: _Optional[_Iterable[int]] = ..., alignment_id: _Optional[str] = ...) -> None: ...

class SecureBoostLeafReach(_message.Message):
    __slots__ = ("tree", "reach")
    TREE_FIELD_NUMBER: _ClassVar[int]
    REACH_FIELD_NUMBER: _ClassVar[int]
    tree: int
    reach: bytes
    def __init__(self, tree: _Optional[int] = ..., reach: _Optional[bytes] = ...) -> None: ...

class SecureBoostPredictReply(_message.Message):
    __slots__ = ("trees",)
    TREES_FIELD_NUMBER: _ClassVar[int]
    trees: _containers.RepeatedCompositeFieldContainer[SecureBoostLeafReach]
    def __init__(self, trees: _Optional[_Iterable[_Union[SecureBoostLeafReach, _Mapping]]] = ...) -> None: ...
