"""Voice-to-voice over gRPC: seed 002's ``VoiceGateway/StreamAudio`` and voxray's own ``Converse``.

``gateway.VoiceGatewaySession`` and ``converse.ConverseSession`` each run one engine
conversation over one bidirectional stream (``serve_app.protocols.grpc_api.stream``); what
they share is in ``session.py`` (config first, errors, barge-in, half-close) and
``audio.py`` (rates, languages, encodings).
"""
