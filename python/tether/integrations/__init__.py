"""Adapters that put tether in front of the tools of agent frameworks.

One module per framework, each an optional extra: `tether.integrations.mcp` (`tether[mcp]`),
`.fastmcp` (`tether[fastmcp]`), `.coaz` (the AuthZEN COAZ-MCP binding, `tether[mcp]`),
`.langchain` (`tether[langchain]`), `.openai_agents` (`tether[openai-agents]`) and
`.pydantic_ai` (`tether[pydantic-ai]`); `.tool_gate` is the framework-free decision they
share. Importing this package imports no framework.
"""

__all__: list[str] = []
