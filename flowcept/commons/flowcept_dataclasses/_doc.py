"""An attribute view of a document with Flowcept's from_dict/to_dict."""
from typing import Any, Dict


class DocObject:
    _type = "task"
    _fields: tuple = ()

    def __init__(self, **values: Any):
        for f in self._fields:
            setattr(self, f, None)
        for k, v in values.items():
            setattr(self, k, v)

    @classmethod
    def from_dict(cls, doc: Dict[str, Any]):
        return cls(**dict(doc))

    def to_dict(self) -> Dict[str, Any]:
        out = {k: v for k, v in vars(self).items() if v is not None and not k.startswith("_")}
        out.setdefault("type", self._type)
        return out

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.to_dict()!r})"

    def __eq__(self, other) -> bool:
        return type(other) is type(self) and other.to_dict() == self.to_dict()
