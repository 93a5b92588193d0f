"""Translate LocalAI's Go text/template prompt templates into Jinja2, at compile time.

The subset is what LocalAI's templates use: text, ``{{ pipeline }}`` output, ``if`` / ``else if``
/ ``else``, ``range`` (with and without ``$k, $v :=``), variables (``$x := …``, ``$x = …``),
parenthesised pipelines, ``|`` pipes, literals, comments, ``{{-`` / ``-}}`` trimming, and the
functions ``eq ne lt le gt ge and or not len index print toJson add1``. Anything else is
reported precisely (template line and column) instead of being guessed at.

Translation choices that keep the output byte-identical to Go's:

* Trim markers are applied here, to the neighbouring text, so the Jinja output has no ``-``
  markers and no dependence on Jinja's own whitespace rules.
* Go variables live in one Jinja ``namespace`` (``_go``): Go assignments inside ``range`` are
  visible after it, Jinja's ``set`` inside a loop is not.
* Printing goes through the Go environment's ``finalize`` (``go_format`` in
  ``template_env``), which prints ``true``, ``<no value>``, ``1e+06`` as Go's fmt does.
* ``range`` over a mapping visits keys in sorted order, as Go does.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

GO_FUNCTIONS = ("eq", "ne", "lt", "le", "gt", "ge", "and", "or", "not", "len", "index", "print", "toJson", "add1")
_KEYWORDS = {"if", "else", "end", "range", "with", "define", "template", "block", "break", "continue"}
_GO_SPACE = " \t\r\n"

# Go's builtin functions, recognised (so a template using one is known to be Go) even where the
# translator does not support them.
_GO_BUILTINS = ("printf", "println", "html", "js", "urlquery", "slice", "call")
# A template is Go-flavoured when an action starts the way only Go actions start.
_GO_ACTION = re.compile(
    r"\{\{-?\s*(?:\.|\$|/\*|(?:if|range|with|end|else|define|template|block|"
    + "|".join(GO_FUNCTIONS + _GO_BUILTINS)
    + r")\b)"
)


def looks_like_go_template(text: str) -> bool:
    """Jinja uses ``{%``; Go actions start with ``.``, ``$``, a keyword or a Go function."""
    if "{%" in text or "{#" in text:
        return False
    return bool(_GO_ACTION.search(text))


class TranslationError(Exception):
    """A construct outside the translated subset, located in the template text."""

    def __init__(self, message: str, line: int, column: int, unsupported: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.line = line
        self.column = column
        # True: valid Go that the translator does not cover. False: Go itself rejects it.
        self.unsupported = unsupported

    def __str__(self) -> str:
        return f"template line {self.line}:{self.column}: {self.message}"


def translate(source: str) -> str:
    """Return the Jinja2 equivalent of a Go text/template, or raise ``TranslationError``."""
    return _translated(source)[0]


def root_fields(source: str) -> list[tuple[str, int, int]]:
    """The fields a template reads from its data (``.Input``, ``$.Functions``): (name, line,
    column), in order. ``TranslationError`` as ``translate``."""
    return _translated(source)[1]


def _translated(source: str) -> tuple[str, list[tuple[str, int, int]]]:
    nodes = _Parser(_lex(source), source).parse_template()
    emitter = _Emitter(source)
    body = emitter.emit_nodes(nodes, _Scope())
    header = "{% set _go = namespace() %}" if emitter.uses_variables else ""
    fields = []
    for name, offset in emitter.root_fields:
        line = source.count("\n", 0, offset) + 1
        fields.append((name, line, offset - (source.rfind("\n", 0, offset) + 1) + 1))
    return header + body, fields


# --- lexing ----------------------------------------------------------------------------------


@dataclass
class _Token:
    kind: str  # text, field, var, dot, ident, string, number, char, lparen, rparen, pipe, declare, assign, comma
    value: str
    offset: int
    end: int


@dataclass
class _Action:
    tokens: list[_Token]
    offset: int
    comment: bool = False


_ACTION_TOKEN = re.compile(
    r"""
    (?P<space>[ \t\r\n]+)
  | (?P<string>"(?:[^"\\\n]|\\.)*")
  | (?P<raw>`[^`]*`)
  | (?P<char>'(?:[^'\\\n]|\\.)+')
  | (?P<declare>:=)
  | (?P<assign>=)
  | (?P<pipe>\|)
  | (?P<lparen>\()
  | (?P<rparen>\))
  | (?P<comma>,)
  | (?P<number>[-+]?(?:0[xX][0-9a-fA-F_]+|\d[\d_]*(?:\.\d*)?(?:[eE][-+]?\d+)?|\.\d+(?:[eE][-+]?\d+)?))
  | (?P<var>\$[A-Za-z0-9_]*)
  | (?P<field>(?:\.[A-Za-z_][A-Za-z0-9_]*)+)
  | (?P<dot>\.)
  | (?P<ident>[A-Za-z_][A-Za-z0-9_]*)
    """,
    re.VERBOSE,
)


def _lex(source: str) -> list[str | _Action]:
    """Split into text and actions, applying trim markers to the neighbouring text."""
    items: list[str | _Action] = []
    pos = 0
    trim_next_text = False
    while True:
        start = source.find("{{", pos)
        text = source[pos:] if start < 0 else source[pos:start]
        if trim_next_text:
            text = text.lstrip(_GO_SPACE)
        if start < 0:
            items.append(text)
            return items
        inner = start + 2
        if source.startswith("- ", inner) or source[inner:inner + 2] in ("-\t", "-\r", "-\n"):
            text = text.rstrip(_GO_SPACE)
            inner += 2
        items.append(text)
        action, pos, trim_next_text = _lex_action(source, inner, start)
        items.append(action)


def _lex_action(source: str, pos: int, start: int) -> tuple[_Action, int, bool]:
    if source.startswith("/*", pos):
        close = source.find("*/", pos + 2)
        if close < 0:
            raise _error(source, pos, "unclosed comment")
        after = close + 2
        for ending, trim in (("}}", False), (" -}}", True)):
            if source.startswith(ending, after):
                return _Action([], start, comment=True), after + len(ending), trim
        raise _error(source, after, "comment must end with '*/}}'")
    tokens: list[_Token] = []
    while pos < len(source):
        if source.startswith("}}", pos):
            return _Action(tokens, start), pos + 2, False
        match = _ACTION_TOKEN.match(source, pos)
        if match is None:
            raise _error(source, pos, f"unexpected character {source[pos]!r} in action")
        kind = match.lastgroup or ""
        if kind == "space":
            # " -}}" closes the action and trims the text after it.
            if source.startswith("-}}", match.end()):
                return _Action(tokens, start), match.end() + 3, True
        else:
            value = match.group()
            if kind == "raw":
                kind, value = "string", _quote(value[1:-1])
            tokens.append(_Token(kind, value, match.start(), match.end()))
        pos = match.end()
    raise _error(source, start, "unclosed action")


def _quote(text: str) -> str:
    """A Go raw string as an interpreted Go string literal (escapes are decoded later)."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _error(source: str, offset: int, message: str) -> TranslationError:
    line = source.count("\n", 0, offset) + 1
    column = offset - (source.rfind("\n", 0, offset) + 1) + 1
    return TranslationError(message, line, column, unsupported="not supported" in message)


# --- parsing ---------------------------------------------------------------------------------


@dataclass
class _Text:
    text: str


@dataclass
class _Expr:
    kind: str  # field, var, dot, literal, call, pipeline
    value: str = ""
    args: list[_Expr] = field(default_factory=list)
    base: _Expr | None = None  # for field access on a variable or parenthesised value
    offset: int = 0


@dataclass
class _Pipeline:
    commands: list[_Expr]
    declare: list[str] = field(default_factory=list)
    assign: bool = False  # "=" rather than ":="
    offset: int = 0


@dataclass
class _Output:
    pipeline: _Pipeline


@dataclass
class _If:
    branches: list[tuple[_Pipeline, list]]
    otherwise: list | None = None


@dataclass
class _Range:
    pipeline: _Pipeline
    body: list
    otherwise: list | None = None


class _Parser:
    def __init__(self, items: list[str | _Action], source: str) -> None:
        self.items = items
        self.source = source
        self.index = 0

    def parse_template(self) -> list:
        nodes, terminator = self._parse_block(top_level=True)
        assert terminator is None
        return nodes

    def _parse_block(self, top_level: bool = False) -> tuple[list, _Action | None]:
        """Parse until ``end`` or ``else``; return the nodes and that terminating action."""
        nodes: list = []
        while self.index < len(self.items):
            item = self.items[self.index]
            self.index += 1
            if isinstance(item, str):
                if item:
                    nodes.append(_Text(item))
                continue
            if item.comment:
                continue
            if not item.tokens:
                raise _error(self.source, item.offset, "missing value for command")
            head = item.tokens[0]
            if head.kind == "ident" and head.value in ("end", "else"):
                if top_level:
                    raise _error(self.source, head.offset, f"unexpected {{{{{head.value}}}}}")
                return nodes, item
            if head.kind == "ident" and head.value == "if":
                nodes.append(self._parse_if(item))
            elif head.kind == "ident" and head.value == "range":
                nodes.append(self._parse_range(item))
            elif head.kind == "ident" and head.value in _KEYWORDS:
                raise _error(self.source, head.offset, f"'{head.value}' is not supported by the Go template translator")
            else:
                nodes.append(_Output(self._parse_pipeline(item.tokens, item.offset)))
        if not top_level:
            raise _error(self.source, len(self.source), "unexpected end of template: missing {{end}}")
        return nodes, None

    def _parse_if(self, action: _Action) -> _If:
        node = _If(branches=[])
        condition = self._parse_pipeline(action.tokens[1:], action.offset)
        while True:
            body, terminator = self._parse_block()
            node.branches.append((condition, body))
            assert terminator is not None
            tokens = terminator.tokens
            if tokens[0].value == "end":
                self._expect_alone(tokens)
                return node
            if len(tokens) > 1 and tokens[1].kind == "ident" and tokens[1].value == "if":
                condition = self._parse_pipeline(tokens[2:], terminator.offset)
                continue
            self._expect_alone(tokens)
            node.otherwise = self._parse_else()
            return node

    def _parse_range(self, action: _Action) -> _Range:
        pipeline = self._parse_pipeline(action.tokens[1:], action.offset)
        if pipeline.assign:
            raise _error(self.source, action.offset, "range needs ':=' to declare its variables")
        body, terminator = self._parse_block()
        node = _Range(pipeline, body)
        assert terminator is not None
        self._expect_alone(terminator.tokens)
        if terminator.tokens[0].value == "else":
            node.otherwise = self._parse_else()
        return node

    def _parse_else(self) -> list:
        """The body after ``{{else}}``, up to its ``{{end}}``."""
        body, terminator = self._parse_block()
        assert terminator is not None
        if terminator.tokens[0].value != "end":
            raise _error(self.source, terminator.offset, "expected {{end}} after {{else}}")
        self._expect_alone(terminator.tokens)
        return body

    def _expect_alone(self, tokens: list[_Token]) -> None:
        if len(tokens) > 1:
            raise _error(self.source, tokens[1].offset, f"unexpected {tokens[1].value!r} after {tokens[0].value!r}")

    def _parse_pipeline(self, tokens: list[_Token], offset: int) -> _Pipeline:
        if not tokens:
            raise _error(self.source, offset, "missing value for command")
        declare: list[str] = []
        assign = False
        for i, token in enumerate(tokens):
            if token.kind in ("declare", "assign"):
                names = tokens[:i]
                if not names or any(t.kind not in ("var", "comma") for t in names):
                    raise _error(self.source, token.offset, "only variables may be declared or assigned")
                declare = [t.value for t in names if t.kind == "var"]
                assign = token.kind == "assign"
                tokens = tokens[i + 1:]
                break
            if token.kind not in ("var", "comma"):
                break
        commands: list[_Expr] = []
        stream = _TokenStream(tokens, self.source, offset)
        while True:
            commands.append(self._parse_command(stream))
            if stream.peek_kind() == "pipe":
                stream.next()
                continue
            if stream.peek_kind() is not None:
                token = stream.next()
                raise _error(self.source, token.offset, f"unexpected {token.value!r}")
            return _Pipeline(commands, declare, assign, offset)

    def _parse_command(self, stream: _TokenStream) -> _Expr:
        operands: list[_Expr] = []
        while stream.peek_kind() not in (None, "pipe", "rparen"):
            operands.append(self._parse_operand(stream))
        if not operands:
            raise _error(self.source, stream.offset(), "missing value for command")
        head = operands[0]
        if head.kind == "function":
            return _Expr("call", head.value, operands[1:], offset=head.offset)
        if len(operands) > 1:
            raise _error(self.source, stream.offset(), "can't give argument to non-function")
        return head

    def _parse_operand(self, stream: _TokenStream) -> _Expr:
        expr = self._parse_term(stream)
        if expr.offset == 0:
            expr.offset = stream.tokens[stream.position - 1].offset if stream.position else stream.start
        return expr

    def _parse_term(self, stream: _TokenStream) -> _Expr:
        token = stream.next()
        if token.kind == "lparen":
            inner = self._parse_nested_pipeline(stream)
            base = _Expr("pipeline", args=inner.commands)
        elif token.kind == "field":
            return _Expr("field", token.value)
        elif token.kind == "dot":
            base = _Expr("dot")
        elif token.kind == "var":
            base = _Expr("var", token.value)
        elif token.kind in ("string", "number", "char"):
            return _Expr("literal", _literal(token, self.source))
        elif token.kind == "ident":
            if token.value in ("true", "false", "nil"):
                return _Expr("literal", {"true": "true", "false": "false", "nil": "none"}[token.value])
            if token.value not in GO_FUNCTIONS:
                raise _error(
                    self.source, token.offset,
                    f"function {token.value!r} is not supported by the Go template translator "
                    f"(supported: {', '.join(GO_FUNCTIONS)})",
                )
            return _Expr("function", token.value, offset=token.offset)
        else:
            raise _error(self.source, token.offset, f"unexpected {token.value!r}")
        follow = stream.peek()
        end = stream.tokens[stream.position - 1].end  # of the term just read: ")" for a pipeline
        if follow is not None and follow.kind == "field" and follow.offset == end:
            stream.next()
            return _Expr("field", follow.value, base=base)
        return base

    def _parse_nested_pipeline(self, stream: _TokenStream) -> _Pipeline:
        depth, collected = 1, []
        while True:
            token = stream.next()
            if token.kind == "lparen":
                depth += 1
            elif token.kind == "rparen":
                depth -= 1
                if depth == 0:
                    pipeline = self._parse_pipeline(collected, token.offset)
                    if pipeline.declare:
                        raise _error(self.source, token.offset, "declarations inside parentheses are not supported")
                    return pipeline
            collected.append(token)


class _TokenStream:
    def __init__(self, tokens: list[_Token], source: str, offset: int) -> None:
        self.tokens = tokens
        self.source = source
        self.start = offset
        self.position = 0

    def peek(self) -> _Token | None:
        return self.tokens[self.position] if self.position < len(self.tokens) else None

    def peek_kind(self) -> str | None:
        token = self.peek()
        return token.kind if token else None

    def next(self) -> _Token:
        token = self.peek()
        if token is None:
            raise _error(self.source, self.offset(), "unexpected end of action")
        self.position += 1
        return token

    def offset(self) -> int:
        token = self.peek()
        if token is not None:
            return token.offset
        return self.tokens[-1].end if self.tokens else self.start


def _literal(token: _Token, source: str) -> str:
    """A Go literal as a Jinja literal."""
    if token.kind == "string":
        try:
            value = _decode_go_string(token.value[1:-1])
        except ValueError as exc:
            raise _error(source, token.offset, f"bad string literal: {exc}") from None
        return repr(value)
    if token.kind == "char":
        try:
            return str(ord(_decode_go_string(token.value[1:-1])))
        except (ValueError, TypeError):
            raise _error(source, token.offset, "bad character literal") from None
    text = token.value.replace("_", "")
    try:
        number = int(text, 0) if re.fullmatch(r"[-+]?(0[xX][0-9a-fA-F]+|\d+)", text) else float(text)
    except ValueError:
        raise _error(source, token.offset, f"bad number {token.value!r}") from None
    return repr(number)


_GO_ESCAPES = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v", "\\": "\\", '"': '"', "'": "'"}


def _decode_go_string(body: str) -> str:
    out, i = [], 0
    while i < len(body):
        ch = body[i]
        if ch != "\\":
            out.append(ch)
            i += 1
            continue
        code = body[i + 1] if i + 1 < len(body) else ""
        if code in _GO_ESCAPES:
            out.append(_GO_ESCAPES[code])
            i += 2
        elif code in "xuU" and code:
            width = {"x": 2, "u": 4, "U": 8}[code]
            digits = body[i + 2:i + 2 + width]
            if len(digits) != width:
                raise ValueError(f"short \\{code} escape")
            out.append(chr(int(digits, 16)))
            i += 2 + width
        elif code.isdigit():
            out.append(chr(int(body[i + 1:i + 4], 8)))
            i += 4
        else:
            raise ValueError(f"unknown escape \\{code}")
    return "".join(out)


# --- emitting Jinja --------------------------------------------------------------------------


@dataclass
class _Scope:
    dot: str | None = None  # Jinja expression for Go's "."; None at the root
    locals: dict[str, str] = field(default_factory=dict)  # range variables → loop names

    def child(self, dot: str, **names: str) -> _Scope:
        return _Scope(dot, {**self.locals, **names})


_BINARY = {"eq": "==", "ne": "!=", "lt": "<", "le": "<=", "gt": ">", "ge": ">="}


class _Emitter:
    def __init__(self, source: str) -> None:
        self.source = source
        self.uses_variables = False
        self.loops = 0
        self.offset = 0  # of the expression being emitted, for error positions
        self.root_fields: list[tuple[str, int]] = []  # fields read from the data itself, with offsets

    def _fail(self, message: str) -> TranslationError:
        return _error(self.source, self.offset, message)

    def emit_nodes(self, nodes: list, scope: _Scope) -> str:
        return "".join(self._emit(node, scope) for node in nodes)

    def _emit(self, node, scope: _Scope) -> str:
        if isinstance(node, _Text):
            return _jinja_text(node.text)
        if isinstance(node, _Output):
            value = self._pipeline(node.pipeline, scope)
            if node.pipeline.declare:
                return self._declare(node.pipeline, value, scope)
            return "{{ " + value + " }}"
        if isinstance(node, _If):
            out = ""
            for i, (condition, body) in enumerate(node.branches):
                keyword = "if" if i == 0 else "elif"
                out += "{% " + keyword + " " + self._pipeline(condition, scope) + " %}" + self.emit_nodes(body, scope)
            if node.otherwise is not None:
                out += "{% else %}" + self.emit_nodes(node.otherwise, scope)
            return out + "{% endif %}"
        if isinstance(node, _Range):
            return self._range(node, scope)
        raise TypeError(node)  # pragma: no cover - the parser produces no other nodes

    def _declare(self, pipeline: _Pipeline, value: str, scope: _Scope) -> str:
        self.offset = pipeline.offset
        if len(pipeline.declare) != 1:
            raise self._fail("only range may declare two variables")
        self.uses_variables = True
        return "{% set _go." + _variable_name(pipeline.declare[0]) + " = " + value + " %}"

    def _range(self, node: _Range, scope: _Scope) -> str:
        self.loops += 1
        n = self.loops
        iterable = self._pipeline(_Pipeline(node.pipeline.commands), scope)
        names = node.pipeline.declare
        if len(names) == 2:
            key, value = f"_k{n}", f"_v{n}"
            head = f"{{% for {key}, {value} in go_items({iterable}) %}}"
            inner = scope.child(value, **{names[0]: key, names[1]: value})
        else:
            value = f"_v{n}"
            head = f"{{% for {value} in go_values({iterable}) %}}"
            inner = scope.child(value, **({names[0]: value} if names else {}))
        out = head + self.emit_nodes(node.body, inner)
        if node.otherwise is not None:
            out += "{% else %}" + self.emit_nodes(node.otherwise, scope)
        return out + "{% endfor %}"

    def _pipeline(self, pipeline: _Pipeline, scope: _Scope) -> str:
        value = self._expr(pipeline.commands[0], scope)
        for command in pipeline.commands[1:]:
            self.offset = command.offset
            if command.kind != "call":
                raise self._fail("only a function can follow '|'")
            value = self._call(command.value, [self._expr(a, scope) for a in command.args] + [value])
        return value

    def _expr(self, expr: _Expr, scope: _Scope) -> str:
        self.offset = expr.offset
        if expr.kind == "literal":
            return expr.value
        if expr.kind == "dot":
            return self._dot(scope)
        if expr.kind == "var":
            return self._variable(expr.value, scope)
        if expr.kind == "pipeline":
            return "(" + self._pipeline(_Pipeline(expr.args), scope) + ")"
        if expr.kind == "call":
            args = [self._expr(a, scope) for a in expr.args]
            self.offset = expr.offset
            return self._call(expr.value, args)
        if expr.kind == "function":
            return self._call(expr.value, [])
        # field access: on dot (no base) or on a variable / parenthesised value
        names = expr.value.lstrip(".").split(".")
        if expr.base is None:
            base = scope.dot
        elif expr.base.kind == "var" and expr.base.value == "$":
            base = None
        else:
            base = self._expr(expr.base, scope)
        if base is None:
            self.root_fields.append((names[0], expr.offset))
            base, names = names[0], names[1:]
        # Subscript rather than attribute access: a key such as "items" must not find dict.items.
        return base + "".join(f"[{name!r}]" for name in names)

    def _dot(self, scope: _Scope) -> str:
        if scope.dot is None:
            raise self._fail("'.' on its own at the top level is not supported by the translator")
        return scope.dot

    def _variable(self, name: str, scope: _Scope) -> str:
        if name == "$":
            raise self._fail("'$' on its own is not supported by the translator")
        if name in scope.locals:
            return scope.locals[name]
        self.uses_variables = True
        return "_go." + _variable_name(name)

    def _call(self, name: str, args: list[str]) -> str:
        arity = {"not": 1, "len": 1, "toJson": 1, "add1": 1}
        if name in arity and len(args) != arity[name]:
            raise self._fail(f"{name} takes {arity[name]} argument(s), got {len(args)}")
        if name in _BINARY:
            if len(args) < 2 or (name != "eq" and len(args) != 2):
                raise self._fail(f"{name} needs two arguments")
            if name == "eq" and len(args) > 2:
                return "(" + " or ".join(f"{args[0]} == {other}" for other in args[1:]) + ")"
            return f"({args[0]} {_BINARY[name]} {args[1]})"
        if name in ("and", "or"):
            if len(args) < 2:
                raise self._fail(f"{name} needs at least two arguments")
            return "(" + f" {name} ".join(args) + ")"
        if name == "not":
            return f"(not {args[0]})"
        if name == "len":
            return f"({args[0]}|length)"
        if name == "add1":
            return f"({args[0]} + 1)"
        if name == "index":
            if not args:
                raise self._fail("index needs an argument")
            return "go_index(" + ", ".join(args) + ")"
        if name == "print":
            return "go_print(" + ", ".join(args) + ")"
        return "go_json(" + args[0] + ")"  # toJson


def _variable_name(go_name: str) -> str:
    return "v_" + go_name.lstrip("$")


def _jinja_text(text: str) -> str:
    """Literal text, protected where Jinja would see a delimiter."""
    if not text:
        return ""
    if "{{" in text or "{%" in text or "{#" in text or text.endswith("{"):
        return "{{ " + repr(text) + " }}"
    return text
