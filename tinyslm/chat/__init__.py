"""Talking to a chat model: a session that keeps the conversation and its KV cache (session.py), and the
`tinyslm chat` command (command.py). The template that writes a conversation out is tinyslm/chat_template.py."""
