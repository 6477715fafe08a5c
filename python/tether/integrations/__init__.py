"""Adapters that put tether in front of the tools of agent frameworks.

One module per framework, each an optional extra: `tether.integrations.mcp`
(`tether[mcp]`), `.coaz` (the AuthZEN COAZ-MCP binding, `tether[mcp]`),
`.langchain` (`tether[langchain]`), `.openai_agents` (`tether[openai-agents]`) and
`.pydantic_ai` (`tether[pydantic-ai]`). Importing this package imports no framework.
"""
