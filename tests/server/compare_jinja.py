#!/usr/bin/env python3
"""`duality chat-template` against jinja2 rendering chat templates the way transformers does.

Renders every template in tests/server/templates/ (real public chat templates: ChatML, Llama-2,
Llama-3, Llama-3.1, Mistral-instruct v0.1 and v0.3, Zephyr, Gemma, Phi-3, Qwen2, Qwen2.5, plus
features.jinja, which
exercises the whole supported subset) over several message lists, with and without the
generation prompt, through jinja2 (ImmutableSandboxedEnvironment(trim_blocks=True,
lstrip_blocks=True), transformers' tojson and raise_exception, tools=None, documents=None) and
through `duality chat-template`, and asserts identical output. Where jinja2 raises, duality must
fail too, and with the same message for raise_exception. Then a list of small snippets checks
expression semantics one by one, and a model folder checks `--model` (tokenizer_config.json).

Needs `pip install jinja2`. Usage:
  compare_jinja.py --duality build/duality [--templates tests/server/templates]
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

import jinja2
import jinja2.ext
from jinja2.sandbox import ImmutableSandboxedEnvironment

HERE = os.path.dirname(os.path.abspath(__file__))


def make_env():
    # transformers.utils.chat_template_utils._compile_jinja_template
    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                          sort_keys=sort_keys)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[jinja2.ext.loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    return env


ENV = make_env()


def reference(source, messages, add_generation_prompt, bos, eos):
    """(text, None) or (None, (exception type, message))."""
    try:
        text = ENV.from_string(source).render(
            messages=messages, tools=None, documents=None,
            add_generation_prompt=add_generation_prompt, bos_token=bos, eos_token=eos)
        return text, None
    except Exception as e:  # noqa: BLE001 - any jinja2 failure is an expected failure
        return None, (type(e).__name__, str(e))


def ours(duality, args, messages, add_generation_prompt, bos=None, eos=None):
    cmd = [duality, "chat-template", *args, "--messages", json.dumps(messages)]
    if not add_generation_prompt:
        cmd.append("--no-generation-prompt")
    if bos is not None:
        cmd += ["--bos-token", bos]
    if eos is not None:
        cmd += ["--eos-token", eos]
    p = subprocess.run(cmd, capture_output=True, timeout=60)
    return p.returncode, p.stdout.decode("utf-8"), p.stderr.decode("utf-8", "replace")


def msg(role, content):
    return {"role": role, "content": content}


CONVERSATIONS = {
    "user": [msg("user", "Hello")],
    "system_user": [msg("system", "You are a helpful assistant."), msg("user", "What is 2+2?")],
    "multi_turn": [msg("user", "Hi"), msg("assistant", "Hello! How can I help?"),
                   msg("user", "Tell me a joke.")],
    "system_multi_turn": [
        msg("system", "  Be brief.  \n"),
        msg("user", "  Spaces around  "),
        msg("assistant", "multi\nline\n\nanswer\n"),
        msg("user", "quotes ' \" and {{ braces }} {% tags %} \\n backslash"),
    ],
    "unicode": [msg("user", "émoji 🦀 ünïcödé 日本語 \u2028 tab\there"),
                msg("assistant", "Ça va? ✓"), msg("user", "")],
    "assistant_first": [msg("assistant", "I start."), msg("user", "ok")],
    "two_users": [msg("user", "one"), msg("user", "two")],
    "system_only": [msg("system", "Only a system prompt.")],
    "other_roles": [msg("user", "call it"), msg("tool", "42"), msg("assistant", "The answer is 42.")],
    "empty": [],
}

# Small templates checked one by one against jinja2 (no messages needed).
SNIPPETS = [
    "{{ 1 + 2 }} {{ 7 / 2 }} {{ 7 // 2 }} {{ -7 // 2 }} {{ 7 % -3 }} {{ 2 ** 10 }} {{ 2 ** -1 }}",
    "{{ 0.1 + 0.2 }} {{ 1e16 }} {{ 1.5e-5 }} {{ 1e15 }} {{ 100.0 }} {{ 3.14159 }} {{ -0.0 }}",
    "{{ 'a' ~ 1 ~ none ~ true ~ undefined_var }} {{ 'x' * 3 }} {{ [1, 2] + [3] }} {{ [0] * 2 }}",
    "{{ none }} {{ True }} {{ [1, 'a', none, false, 1.5] }} {{ {'k': \"it's\", 'n': [1]} }}",
    "{{ 'a' 'b' \"c\" }} {{ 'esc\\t\\x41\\u00e9\\\\' }} {{ '\\'' }} {{ \"\\\"\" }}",
    "{{ undefined_var }}|{{ undefined_var is defined }}|{{ undefined_var is undefined }}|{% if undefined_var %}T{% else %}F{% endif %}",
    "{{ x | default('d') }} {{ '' | default('d') }} {{ '' | default('d', true) }} {{ none | default('d') }}",
    "{{ 1 == 1.0 }} {{ true == 1 }} {{ 'a' < 'b' }} {{ [1, 2] < [1, 3] }} {{ 1 < 2 < 3 }} {{ 3 > 2 > 2 }}",
    "{{ 'b' in 'abc' }} {{ 2 in [1, 2] }} {{ 'k' in {'k': 1} }} {{ 'z' not in 'abc' }} {{ not 1 in [1] }}",
    "{{ 1 and 'x' }} {{ 0 and 'x' }} {{ '' or 'y' }} {{ 'a' or 'b' }} {{ not '' }} {{ none or [] }}",
    "{{ 'yes' if 1 else 'no' }} {{ 'yes' if 0 else 'no' }} [{{ 'yes' if 0 }}] {{ 1 if 0 else 2 if 0 else 3 }}",
    "{{ 'abcdef'[1] }} {{ 'abcdef'[-1] }} {{ 'abcdef'[1:3] }} {{ 'abcdef'[::2] }} {{ 'abcdef'[::-1] }} {{ 'abcdef'[-2:] }} {{ 'abcdef'[:-4] }}",
    "{{ [1, 2, 3, 4][1:] }} {{ [1, 2, 3, 4][:-1] }} {{ [1, 2, 3, 4][::-2] }} {{ [1, 2][5:] }} {{ [1, 2][5] is defined }}",
    "{{ 'héllo wörld'[1:4] }} {{ 'héllo' | length }} {{ 'héllo' | reverse }} {{ 'héllo'[1] }}",
    "{{ '  pad  ' | trim }}|{{ 'xxhixx'.strip('x') }}|{{ '  l'.lstrip() }}|{{ 'r  '.rstrip() }}|{{ ' a b  c '.split() }}|{{ 'a,b,,c'.split(',') }}|{{ 'a b c'.split(' ', 1) }}",
    "{{ 'Hello'.upper() }} {{ 'Hello'.lower() }} {{ 'hELLO wORLD' | capitalize }} {{ 'hello big world' | title }} {{ 'x' | upper }}",
    "{{ 'abc'.startswith('a') }} {{ 'abc'.endswith('bc') }} {{ 'abc'.startswith('b') }} {{ 'abc' | replace('b', 'X') }} {{ 'aaa' | replace('a', 'b', 2) }} {{ 'abc' | replace('', '-') }}",
    "{{ [3, 1, 2] | first }} {{ [3, 1, 2] | last }} {{ [3, 1, 2] | length }} {{ [3, 1, 2] | join('-') }} {{ [3, 1, 2] | join }} {{ 'abc' | first }} {{ [] | first is defined }}",
    "{{ {'b': 1, 'a': [1, 2, {'c': none}], 'u': 'é\"\\n'} | tojson }} {{ 'x' | tojson }} {{ 1.5 | tojson }} {{ [] | tojson }} {{ {} | tojson }}",
    "{{ {'b': 1, 'a': [1, {'c': true}]} | tojson(indent=2) }}",
    "{{ {'b': 1, 'a': 2} | tojson(sort_keys=true) }}",
    "{% for i in range(5) %}{{ loop.index }}{{ loop.index0 }}{{ loop.revindex }}{{ loop.revindex0 }}{{ loop.first }}{{ loop.last }}{{ loop.length }};{% endfor %}",
    "{% for i in [1, 2, 3] %}{% if loop.previtem is defined %}{{ loop.previtem }}{% endif %}<{{ i }}>{% if loop.nextitem is defined %}{{ loop.nextitem }}{% endif %}{% endfor %}",
    "{% for i in [] %}x{% else %}empty{% endfor %} {% for c in 'abc' %}{{ c }}.{% endfor %} {% for k in {'x': 1, 'y': 2} %}{{ k }}{% endfor %}",
    "{% for k, v in {'x': 1, 'y': 2}.items() %}{{ k }}={{ v }};{% endfor %} {% for a, b in [[1, 2], [3, 4]] %}{{ a + b }}{% endfor %}",
    "{% for i in range(10) if i is odd %}{{ i }}{{ '' if loop.last else ',' }}{% endfor %} {% for i in range(2, 10, 3) %}{{ i }}{% endfor %} {% for i in range(3, 0, -1) %}{{ i }}{% endfor %}",
    "{% for i in range(10) %}{% if i == 2 %}{% continue %}{% endif %}{% if i == 5 %}{% break %}{% endif %}{{ i }}{% endfor %}",
    "{% set x = 1 %}{% for i in [1, 2] %}{{ x }}{% set x = x + 10 %}{{ x }};{% endfor %}{{ x }}",
    "{% for i in [1, 2, 3] %}{% if i == 1 %}{% set y = 5 %}{% endif %}[{{ y }}]{% endfor %}[{{ y }}]",
    "{% set ns = namespace(total=0, items=[]) %}{% for i in range(4) %}{% set ns.total = ns.total + i %}{% set ns.items = ns.items + [i] %}{% endfor %}{{ ns.total }} {{ ns.items }}",
    "{% set block %}  inner {{ 1 + 1 }}  {% endset %}[{{ block }}] {{ block | length }}",
    "{% if false %}a{% elif 0 %}b{% elif 'x' %}c{% else %}d{% endif %}{% if none is none %}N{% endif %}{% if 1 is not none %}M{% endif %}",
    "{{ 'x' is string }} {{ 1 is number }} {{ 1.5 is number }} {{ 1 is integer }} {{ 1.5 is float }} {{ [] is sequence }} {{ {} is mapping }} {{ 'a' is mapping }} {{ true is boolean }} {{ none is none }}",
    "{{ 4 is even }} {{ 3 is odd }} {{ 9 is divisibleby 3 }} {{ 9 is divisibleby(2) }} {{ 'abc' is lower }} {{ 'ABC' is upper }} {{ 1 is eq 1 }} {{ 2 is in [1, 2] }} {{ 1 is sameas 1 }}",
    "{{ {'a': 1}.get('a') }} {{ {'a': 1}.get('b') }} {{ {'a': 1}.get('b', 'dflt') }} {{ {'a': 1, 'b': 2}.keys() | list }} {{ {'a': 1}.values() | list }} {{ {'a': 1} | items | list }}",
    "{{ [{'r': 'u', 'c': 1}, {'r': 'a', 'c': 2}, {'r': 'u', 'c': 3}] | selectattr('r', 'equalto', 'u') | map(attribute='c') | list }} {{ [{'r': 1}, {'r': 0}] | rejectattr('r') | list }} {{ ['A', 'B'] | map('lower') | join }}",
    "{{ [1, 0, 2, none, 'a'] | select | list }} {{ range(10) | reject('odd') | list }} {{ ['a', 'code', 'b'] | reject('equalto', 'code') | join(', ') }} {{ [1, 5, 9] | select('gt', 4) | list }}",
    "{{ '1' | int + 1 }} {{ 'x' | int }} {{ 1.9 | int }} {{ '1.5' | float }} {{ 3 | float }} {{ -3 | abs }} {{ 1 | string ~ 'x' }} {{ 'ab' | list }}",
    "{{ messages }}|{{ add_generation_prompt }}|{{ tools }}|{{ tools is none }}|{{ documents is defined }}",
    "{% set d = {'a': {'b': [10, 20]}} %}{{ d.a.b[1] }} {{ d['a']['b'][-1] }} {{ d.a.missing is defined }} {{ d.a.b.0 }}",
    "a\n  {% if true %}\n  x\n  {% endif %}\n  {# comment #}\nb\n",
    "{{- '  x  ' -}}  \n  {{ 'y' }}   {{- 'z' }}",
    "  {%- if true %}a{% endif %}  \n  {%+ if true %}b{% endif %}\n{{ 1 }}\n{% if true +%}\nx{% endif %}",
    "line1\r\nline2\r{% if true %}\r\n{{ 'z' }}{% endif %}\n\n",
    "{# comment with {{ braces }} and {% tags %} #}text{#- trimmed -#}   more",
    "{{ {'a': {'b': 1}} }} {{ {'x': [1, {'y': 2}]}['x'][1]['y'] }}",
    "{{ raise_exception('custom failure: ' ~ 42) }}",
    "{{ undefined_thing.attr }}",
    "{{ undefined_thing + 'a' }}",
    "{{ 'a' + 1 }}",
    "{{ 1 / 0 }}",
    "{% for x in 5 %}{% endfor %}",
]

BAD_SYNTAX = [
    ("{% macro m() %}x{% endmacro %}", "macro"),
    ("{% include 'x' %}", "include"),
    ("{% import 'x' as y %}", "import"),
    ("{% extends 'base' %}", "extends"),
    ("{% call m() %}{% endcall %}", "call"),
    ("{% if true %}never closed", "if"),
    ("{{ 1 + }}", "line 1"),
    ("{{ x | nosuchfilter }}", "nosuchfilter"),
    ("{{ x is nosuchtest }}", "nosuchtest"),
    ("text {{ 'unterminated }}", "unterminated"),
    ("{% endfor %}", "endfor"),
]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duality", required=True)
    ap.add_argument("--templates", default=os.path.join(HERE, "templates"))
    args = ap.parse_args()

    with open(os.path.join(args.templates, "tokens.json")) as f:
        tokens = json.load(f)
    failures = []
    checks = 0

    def check(label, ref, got):
        nonlocal checks
        checks += 1
        text, err = ref
        rc, out, stderr = got
        if err is None:
            if rc != 0:
                failures.append(f"{label}: jinja2 rendered {text!r}, duality failed: {stderr.strip()}")
            elif out != text:
                failures.append(f"{label}:\n  jinja2:  {text!r}\n  duality: {out!r}")
        else:
            if rc == 0:
                failures.append(f"{label}: jinja2 failed ({err[0]}: {err[1]}), duality printed {out!r}")
            elif err[0] == "TemplateError" and err[1] not in stderr:
                failures.append(f"{label}: raise_exception message {err[1]!r} missing from {stderr.strip()!r}")

    # Real templates over the conversations.
    names = sorted(n[:-len(".jinja")] for n in os.listdir(args.templates) if n.endswith(".jinja"))
    for name in names:
        path = os.path.join(args.templates, name + ".jinja")
        with open(path, encoding="utf-8") as f:
            source = f.read()
        tok = tokens.get(name, {"bos_token": "<s>", "eos_token": "</s>"})
        for conv_name, conv in CONVERSATIONS.items():
            for agp in (True, False):
                ref = reference(source, conv, agp, tok["bos_token"], tok["eos_token"])
                got = ours(args.duality, ["--template", path], conv, agp, tok["bos_token"], tok["eos_token"])
                check(f"{name}/{conv_name}/agp={agp}", ref, got)

    # Snippets.
    with tempfile.TemporaryDirectory() as tmp:
        for k, snippet in enumerate(SNIPPETS):
            path = os.path.join(tmp, f"snippet{k}.jinja")
            with open(path, "w", encoding="utf-8", newline="") as f:
                f.write(snippet)
            conv = CONVERSATIONS["multi_turn"]
            ref = reference(snippet, conv, True, "<s>", "</s>")
            got = ours(args.duality, ["--template", path], conv, True, "<s>", "</s>")
            check(f"snippet {k} {snippet[:60]!r}", ref, got)

        for k, (snippet, needle) in enumerate(BAD_SYNTAX):
            checks += 1
            path = os.path.join(tmp, f"bad{k}.jinja")
            with open(path, "w", encoding="utf-8") as f:
                f.write(snippet)
            rc, out, stderr = ours(args.duality, ["--template", path], [msg("user", "x")], True)
            if rc == 0 or needle not in stderr or "line" not in stderr:
                failures.append(f"bad syntax {snippet!r}: expected an error naming {needle!r} and "
                                f"the line, got rc={rc} {stderr.strip()!r}")

        # --model: tokenizer_config.json with a template list and {"content": ...} tokens.
        with open(os.path.join(args.templates, "llama2.jinja"), encoding="utf-8") as f:
            llama2 = f.read()
        model = os.path.join(tmp, "model")
        os.mkdir(model)
        with open(os.path.join(model, "tokenizer_config.json"), "w", encoding="utf-8") as f:
            json.dump({"bos_token": {"content": "<s>", "lstrip": False}, "eos_token": "</s>",
                       "chat_template": [{"name": "tool_use", "template": "unused"},
                                         {"name": "default", "template": llama2}]}, f)
        for conv_name in ("system_multi_turn", "multi_turn", "two_users"):
            conv = CONVERSATIONS[conv_name]
            ref = reference(llama2, conv, True, "<s>", "</s>")
            check(f"--model llama2/{conv_name}", ref, ours(args.duality, ["--model", model], conv, True))

    if failures:
        print(f"{len(failures)} of {checks} checks FAILED:")
        for f in failures:
            print("  " + f)
        return 1
    print(f"all {checks} checks match jinja2 {jinja2.__version__}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
