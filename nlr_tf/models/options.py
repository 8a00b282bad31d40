"""An option: a dataclass field that is also an `nlr-train` flag (its default, help text, choices and bounds).

`TrainConfig`'s own fields and each family's options (`methods.Family`)
are made with `option`; the binary defines its flags from these fields, so
a field, its default and its flag cannot drift apart. The module imports
no TensorFlow: `nlr-train --help` stays fast.
"""

import dataclasses
from typing import Any, Optional


def option(
    default: Any,
    help: str,
    *,
    choices: Optional[tuple] = None,
    lower: Optional[float] = None,
    upper: Optional[float] = None,
    required: bool = False,
) -> dataclasses.Field:
    """A dataclass field with its flag's description (`flag` metadata); a `required` field has no default.

    Args:
        default: the field's and the flag's default.
        help: str. The flag's help text.
        choices: tuple or None. The values the flag takes (an enum flag).
        lower, upper: number or None. The flag's bounds (inclusive).
        required: bool. The flag must be given (the field has no default).
    """
    flag = {"help": help, "choices": choices, "lower": lower, "upper": upper}
    if required:
        return dataclasses.field(metadata={"flag": flag})
    return dataclasses.field(default=default, metadata={"flag": flag})


def flag_spec(field: dataclasses.Field) -> dict[str, Any]:
    """An option's flag description: `help`, `choices`, `lower`, `upper`."""
    return field.metadata["flag"]
