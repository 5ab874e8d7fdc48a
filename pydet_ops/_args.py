"""Validation of the Python wrappers' arguments, shared by every public function and module.

Each helper takes the name of the public op (``op``) and of the argument (``name``) and raises an error that
names both, following the README's rules for unusual input:

* a value of the wrong Python type is a ``TypeError`` (None, a list, a float where an int is expected);
* a string, numeric strings included, is a ``ValueError`` (never parsed as a number);
* a bool where a number is expected counts as 0 / 1 (as in torchvision);
* tensors on different devices are a ``ValueError`` (the fake kernels raise the same message as a
  ``RuntimeError``, as the compiled kernels do).

Every check is O(1) per argument (O(number of entries) for lists of tensors): nothing reads tensor data.
Range checks that the kernels make (positive sizes, finite scales, ...) are left to the kernels.
"""

import math
import operator
from typing import Callable, Iterable, Optional, Sequence, Tuple

import torch
from torch import Tensor

_STRINGS = (str, bytes, bytearray)
_SYMBOLIC = (torch.SymInt, torch.SymFloat)


def check_tensor(op: str, name: str, value) -> None:
    if not isinstance(value, Tensor):
        raise TypeError(f"{op}: {name} must be a torch.Tensor, got {type(value).__name__}")


def same_device_error(op: str, named: Iterable[Tuple[str, Tensor]]) -> Optional[str]:
    """The message for the first of ``named`` ((name, tensor) pairs) not on the first one's device, else None."""
    items = iter(named)
    first_name, first = next(items)
    for name, t in items:
        if t.device != first.device:
            return f"{op}: {first_name} and {name} must be on the same device, got {first.device} and {t.device}"
    return None


def check_same_device(op: str, *named: Tuple[str, Tensor], **tensors: Tensor) -> None:
    """``check_same_device("nms", boxes=boxes, scores=scores)``: every tensor on the first one's device. Names
    that are not identifiers come as (name, tensor) pairs first: ``check_same_device(op, ("x['p2']", t), ...)``."""
    message = same_device_error(op, [*named, *tensors.items()])
    if message is not None:
        raise ValueError(message)


def check_list_device(op: str, name: str, tensors: Sequence[Tensor]) -> None:
    """Every entry of the list argument ``name`` on the device of its first entry."""
    for i in range(1, len(tensors)):
        if tensors[i].device != tensors[0].device:
            raise ValueError(
                f"{op}: {name} must all be on the same device, got {tensors[0].device} for {name}[0] and "
                f"{tensors[i].device} for {name}[{i}]"
            )


def _describe(value) -> str:
    return f"{type(value).__name__} {value!r}"


def as_float(op: str, name: str, value) -> float:
    """A number as a float: int, float, bool (0 / 1), NumPy scalars, one-element tensors; never a string."""
    if type(value) is float:
        return value
    if isinstance(value, _STRINGS):
        raise ValueError(f"{op}: {name} must be a number, got the string {value!r}")
    if isinstance(value, _SYMBOLIC):
        return value
    try:
        return float(value)
    except (TypeError, ValueError, RuntimeError):
        raise TypeError(f"{op}: {name} must be a number, got {_describe(value)}") from None


def as_int(op: str, name: str, value) -> int:
    """An integer: int, bool (0 / 1), NumPy integers, integer one-element tensors; not a float or a string."""
    if type(value) is int:
        return value
    if isinstance(value, _STRINGS):
        raise ValueError(f"{op}: {name} must be an int, got the string {value!r}")
    if isinstance(value, torch.SymInt):
        return value
    try:
        return operator.index(value)
    except TypeError:
        raise TypeError(f"{op}: {name} must be an int, got {_describe(value)}") from None


def as_number(op: str, name: str, value):
    """An int (see :func:`as_int`) kept as an int, or else a float (see :func:`as_float`)."""
    if type(value) in (int, float):
        return value
    if isinstance(value, _STRINGS):
        raise ValueError(f"{op}: {name} must be a number, got the string {value!r}")
    if isinstance(value, _SYMBOLIC):
        return value
    try:
        return operator.index(value)
    except TypeError:
        return as_float(op, name, value)


def as_bool(op: str, name: str, value) -> bool:
    """A bool, and only a bool: ``bool("no")`` and ``bool([False])`` are true, so nothing else is converted."""
    if isinstance(value, bool):
        return value
    raise TypeError(f"{op}: {name} must be a bool (True or False), got {_describe(value)}")


def as_pair(op: str, name: str, value, item: Callable = as_int) -> Tuple:
    """Exactly two values (a tuple, list, torch.Size or 1-D tensor), each converted by ``item(op, name, v)``."""
    if isinstance(value, _STRINGS):
        raise ValueError(f"{op}: {name} must be a pair (height, width), got the string {value!r}")
    if not (isinstance(value, (tuple, list)) or (isinstance(value, Tensor) and value.dim() == 1)):
        raise TypeError(f"{op}: {name} must be a pair (height, width), got {_describe(value)}")
    if len(value) != 2:
        raise ValueError(f"{op}: {name} must be a pair (height, width), got {len(value)} values: {value!r}")
    return item(op, name, value[0]), item(op, name, value[1])


def as_size(op: str, name: str, value) -> Tuple[int, int]:
    """An output size (height, width) from an int or a sequence of one or two ints (range checked by the kernels)."""
    if isinstance(value, (tuple, list)):
        if len(value) not in (1, 2):
            raise ValueError(f"{op}: {name} must be an int or a pair of ints, got {value!r}")
        return as_int(op, name, value[0]), as_int(op, name, value[-1])
    if isinstance(value, _STRINGS):
        raise ValueError(f"{op}: {name} must be an int or a pair of ints, got the string {value!r}")
    if type(value) is not int:
        try:
            value = operator.index(value)
        except TypeError:
            raise TypeError(f"{op}: {name} must be an int or a pair of ints, got {_describe(value)}") from None
    return value, value


def as_positive_numbers(op: str, name: str, values: Iterable) -> list:
    """A list of positive finite numbers: ints or floats only (a bool, a string or a tensor is a TypeError)."""
    result = list(values)
    for v in result:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise TypeError(f"{op}: {name} must be numbers, got {v!r}")
        if not (math.isfinite(v) and v > 0):
            raise ValueError(f"{op}: {name} must be positive and finite, got {v!r}")
    return result
