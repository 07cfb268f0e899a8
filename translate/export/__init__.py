"""A model directory as ONNX graphs (:mod:`.graphs`), their manifest (:mod:`.manifest`) and a
decoder over them that needs no torch (:mod:`.engine`): for services, phones and browsers."""
