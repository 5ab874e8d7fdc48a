"""isinstance() compatibility for the classes that stand in for torchvision's."""


class DropInMeta(type):
    """Metaclass of the pydet_ops modules that replace torchvision classes.

    While torchvision is patched (:func:`pydet_ops.patch_torchvision`), torchvision's constructors check their
    arguments against our classes (``isinstance(anchor_generator, AnchorGenerator)`` in FasterRCNN, for
    example). An instance of the original torchvision class, built before the patch, must still pass: the
    patch lists the originals in ``_stands_in_for`` and removes them again when it is undone.
    """

    def __instancecheck__(cls, obj) -> bool:
        if type.__instancecheck__(cls, obj):
            return True
        return any(isinstance(obj, original) for original in cls.__dict__.get("_stands_in_for", ()))
