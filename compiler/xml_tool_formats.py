"""The XML-like tool-call syntaxes LocalAI reads (pkg/functions/parse.go ``getAllXMLFormats``,
after llama.cpp's ``xml_tool_call_format``): a call is ``tool_start NAME tool_sep``, then each
argument as ``key_start KEY key_val_sep [key_val_sep2] VALUE val_end``, then ``tool_end``; the
calls may sit inside ``scope_start ... scope_end``. A YAML picks one by name
(``function.xml_format_preset``) or spells one out (``function.xml_format``); replies in any of
the presets are recognised without either.
"""

from __future__ import annotations

from modelyard.compiler.plan import XmlToolFormat

_QWEN3_CODER = XmlToolFormat(scope_start="<tool_call>", tool_start="<function=", tool_sep=">",
                             key_start="<parameter=", key_val_sep=">", val_end="</parameter>",
                             tool_end="</function>", scope_end="</tool_call>", trim_values=True)

# The tag-based presets (LocalAI's JSON-shaped ones, functionary, kimi-k2, apriel-1.5 and
# xiaomi-mimo, are the JSON syntaxes launcher/tool_formats.py reads anyway).
PRESETS: dict[str, XmlToolFormat] = {
    "qwen3-coder": _QWEN3_CODER,
    "qwen3.5": _QWEN3_CODER,
    "glm-4.5": XmlToolFormat(tool_start="<tool_call>", tool_sep="", key_start="<arg_key>",
                             key_val_sep="</arg_key>", key_val_sep2="<arg_value>", val_end="</arg_value>",
                             tool_end="</tool_call>"),
    "minimax-m2": XmlToolFormat(scope_start="<minimax:tool_call>", tool_start='<invoke name="', tool_sep='">',
                                key_start='<parameter name="', key_val_sep='">', val_end="</parameter>",
                                tool_end="</invoke>", scope_end="</minimax:tool_call>"),
}
# LocalAI's other preset names: their syntaxes are JSON-shaped, read without a preset.
JSON_SHAPED_PRESETS = ("functionary", "kimi-k2", "apriel-1.5", "xiaomi-mimo")
