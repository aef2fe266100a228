"""Applications: live microphone demo and streaming WebSocket server."""
