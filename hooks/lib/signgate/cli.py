"""The `signgate` command line: the webhook's decisions, before anything reaches a cluster.

    signgate verify IMAGE...            resolve and verify images; exit 0 only if all pass
    signgate check FILE... [-o json]    the decision the webhook would take for each manifest
    signgate config                     validate the configuration, print rules in match order
    signgate notary root-key GUN --server URL [--ca FILE]
                                        print the root public key of a Notary trust collection
    signgate serve --socket PATH [--max-workers N]
                                        run the warm verifier service for the hook (service.py)
    signgate ping --socket PATH         exit 0 if the verifier service answers (for probes)
    signgate sigstore verify-bundle --bundle B (--key K | --certificate-identity I
        --certificate-oidc-issuer O) --trusted-root T (FILE | sha256:HEX)
                                        verify one sigstore bundle offline (verifiers/cosign/conformance.py)

All three use the hook's own code (config loader, policy, decision), so what they print is what
the webhook would answer. Exit codes: 0 pass, 1 a denial or failed image, 2 usage or
configuration error.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, Iterable, Iterator, TextIO

from .config import DEFAULT_CONFIG_PATH, Config, config_path_from_env, load_config
from .deadline import Deadline
from .errors import SigngateError

# Deferred imports: each subcommand loads only what it runs (`ping`, `notary root-key` and
# `sigstore` need no decision code, `config` no verifier).

EXIT_OK, EXIT_DENIED, EXIT_ERROR = 0, 1, 2


def main(argv: list[str] | None = None, out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] in (["serve"], ["ping"]):
        # The verifier service reads the configuration per request, as the hook does.
        from .service import main as service_main

        return service_main(argv, out=out, err=err)
    if argv[:2] == ["notary", "root-key"]:
        # Needs no configuration: it is how the configuration's pinned key is obtained.
        from .verifiers.notaryv1.cli import root_key_main

        return root_key_main(argv[2:], out=out, err=err)
    if argv[:1] == ["sigstore"]:
        # Needs no configuration: the sigstore-conformance client protocol, all inputs on the command line.
        from .verifiers.cosign.conformance import main as sigstore_main

        return sigstore_main(argv[1:], out=out, err=err)
    parser = _parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help(err)
        return EXIT_ERROR
    try:
        from .hook import verify_key_files

        config = load_config(args.config or config_path_from_env(os.environ), os.environ)
        # As the hook's --config call does: with a broken key file the webhook never starts, so
        # no command may answer as if it would (a missing key is exit 2, not "image denied").
        verify_key_files(config)
        return int(args.handler(args, config, out, err))
    except SigngateError as exc:
        err.write(f"signgate: {exc}\n")
        return EXIT_ERROR
    except BrokenPipeError:
        return EXIT_ERROR


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="signgate", description="Verify container image signatures as the signgate webhook does.")
    parser.add_argument("--config", help=f"configuration file (default: $SIGNGATE_CONFIG or {DEFAULT_CONFIG_PATH})")
    commands = parser.add_subparsers(dest="command")

    verify = commands.add_parser("verify", help="resolve and verify images")
    verify.add_argument("images", nargs="+", metavar="IMAGE")
    verify.add_argument("-o", "--output", choices=("text", "json"), default="text")
    verify.set_defaults(handler=cmd_verify)

    check = commands.add_parser("check", help="print the webhook's decision for Kubernetes manifests")
    check.add_argument("files", nargs="+", metavar="FILE", help="YAML or JSON manifests; - for stdin")
    check.add_argument("-n", "--namespace", default="default", help="namespace for objects that name none")
    check.add_argument("-o", "--output", choices=("text", "json"), default="text")
    check.set_defaults(handler=cmd_check)

    commands.add_parser("serve", help="serve --socket PATH [--max-workers N]: the warm verifier service for the hook")
    commands.add_parser("ping", help="ping --socket PATH: exit 0 if the verifier service answers")
    commands.add_parser("notary", help="notary root-key GUN --server URL [--ca FILE]: print a trust collection's root key (PEM)")
    commands.add_parser("sigstore", help="sigstore verify-bundle ...: verify one sigstore bundle offline (the sigstore-conformance protocol)")
    config = commands.add_parser("config", help="validate the configuration and print the effective rules")
    config.set_defaults(handler=cmd_config)
    return parser


# ---- verify -------------------------------------------------------------------------------------


def cmd_verify(args: argparse.Namespace, config: Config, out: TextIO, err: TextIO) -> int:
    from .decision import decide

    containers = [{"name": f"image-{i}", "image": image} for i, image in enumerate(args.images)]
    request = {
        "uid": "signgate-cli",
        "operation": "CREATE",
        "kind": {"group": "", "version": "v1", "kind": "Pod"},
        "namespace": "default",
        "object": {"kind": "Pod", "metadata": {"name": "signgate-verify"}, "spec": {"containers": containers}},
    }
    decision = decide(request, config, Deadline(config.webhook.deadline_seconds))
    if not decision.results and not decision.allowed:
        # Denied as a whole before any image was looked at (too many images): nothing passed.
        err.write(f"{decision.message}\n")
        return EXIT_DENIED
    reports = [
        {
            "image": result.container.image,
            "rule": result.rule.label if result.rule else None,
            "mode": result.mode,
            "digest": result.verdict.digest,
            "passed": result.verdict.passed,
            "reason": result.verdict.reason,
            "keys": list(result.verdict.verified_keys),
            "message": result.verdict.message,
        }
        for result in decision.results
    ]
    if args.output == "json":
        out.write(json.dumps(reports, indent=2) + "\n")
    else:
        for report in reports:
            out.write(f"{report['image']}\n")
            out.write(f"  rule:   {report['rule'] or '(none)'}\n")
            if report["digest"]:
                out.write(f"  digest: {report['digest']}\n")
            if report["passed"]:
                how = f"verified by key(s) {', '.join(report['keys'])}" if report["keys"] else report["reason"]
                out.write(f"  result: PASS ({how})\n")
            else:
                out.write(f"  result: FAIL: {report['message']}\n")
    return EXIT_OK if all(r["passed"] for r in reports) else EXIT_DENIED


# ---- check --------------------------------------------------------------------------------------


def cmd_check(args: argparse.Namespace, config: Config, out: TextIO, err: TextIO) -> int:
    from .admission import POD_SPEC_PATHS
    from .decision import decide

    reports = []
    for source, obj in read_manifests(args.files):
        kind = obj.get("kind") if isinstance(obj.get("kind"), str) else None
        metadata = obj.get("metadata") if isinstance(obj.get("metadata"), dict) else {}
        name = metadata.get("name") or metadata.get("generateName") or "(unnamed)"
        namespace = metadata.get("namespace") or args.namespace
        skip = None
        if kind not in POD_SPEC_PATHS:
            skip = "no pod spec"
        elif namespace in config.excluded_namespaces():
            skip = f"namespace {namespace} is excluded from the webhook"  # the webhook never sees it
        if skip:
            reports.append({"source": source, "kind": kind, "name": name, "namespace": namespace, "checked": False,
                            "allowed": True, "message": "", "warnings": [], "skipped": skip})
            continue
        request = {
            "uid": "signgate-cli",
            "operation": "CREATE",
            "kind": {"kind": kind},
            "namespace": namespace,
            "name": metadata.get("name", ""),
            "object": obj,
        }
        try:
            decision = decide(request, config, Deadline(config.webhook.deadline_seconds))
            allowed, message, warnings = decision.allowed, decision.message, decision.warnings
        except SigngateError as exc:
            allowed, message, warnings = False, f"signgate: {exc}", []
        reports.append({"source": source, "kind": kind, "name": name, "namespace": namespace, "checked": True,
                        "allowed": allowed, "message": message, "warnings": warnings})

    if args.output == "json":
        out.write(json.dumps(reports, indent=2) + "\n")
    else:
        for report in reports:
            target = f"{report['kind']}/{report['name']} ({report['source']})"
            if not report["checked"]:
                out.write(f"skipped  {target}: {report['skipped']}\n")
                continue
            for warning in report["warnings"]:
                out.write(f"Warning: {warning}\n")
            if report["allowed"]:
                out.write(f"allowed  {target}\n")
            else:
                out.write(f'denied   {target}: admission webhook "{config.webhook.name}" denied the request: {report["message"]}\n')
    return EXIT_OK if all(r["allowed"] for r in reports) else EXIT_DENIED


def read_manifests(files: Iterable[str]) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every object in the files: multi-document YAML, JSON, and items of `List` objects."""
    import yaml

    for name in files:
        if name == "-":
            stdin = getattr(sys.stdin, "buffer", None)
            raw = stdin.read() if stdin is not None else sys.stdin.read().encode("utf-8")
            source = "stdin"
        else:
            try:
                with open(name, "rb") as handle:
                    raw = handle.read()
            except OSError as exc:
                raise SigngateError(f"cannot read {name}: {exc.strerror}") from None
            source = name
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise SigngateError(f"{source}: not UTF-8 text, so not a YAML or JSON manifest") from None
        try:
            documents = list(yaml.safe_load_all(text))
        except yaml.YAMLError as exc:
            raise SigngateError(f"{source}: invalid YAML: {getattr(exc, 'problem', None) or exc}") from None
        for number, document in enumerate(documents):
            yield from _objects(document, f"{source}#{number}")


def _objects(document: Any, source: str, where: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    # An empty document (a template that rendered nothing) has no object. Anything else that is
    # not a mapping is not a manifest at all: skipping it silently would pass a check of a file
    # that was never a manifest (a wrong path, a text file) with exit 0.
    if document is None:
        return
    if not isinstance(document, dict):
        raise SigngateError(f"{source}{where}: not a Kubernetes object ({_type_name(document)})")
    kind = document.get("kind")
    if kind == "List" or (isinstance(kind, str) and kind.endswith("List") and "items" in document):
        items = document.get("items") or []
        if not isinstance(items, list):
            raise SigngateError(f"{source}{where}: the {kind}'s items are not a list")
        for number, item in enumerate(items):
            yield from _objects(item, source, f"{where} items[{number}]")
        return
    yield source + where, document


def _type_name(value: Any) -> str:
    names = {str: "a string", int: "an integer", float: "a number", bool: "a boolean", list: "a list"}
    return names.get(type(value), type(value).__name__)


# ---- config -------------------------------------------------------------------------------------


def cmd_config(args: argparse.Namespace, config: Config, out: TextIO, err: TextIO) -> int:
    from .hook import namespace_selector
    from .policy import ordered_rules

    out.write(f"configuration {config.source} is valid\n")
    out.write(f"mode: {config.mode}; denyLatest: {config.deny_latest}; requireDigest: {config.require_digest}; "
              f"unmatched images: {config.unmatched_images}\n")
    out.write(f"namespaces: {json.dumps(namespace_selector(config))}\n")
    out.write("rules, in the order they are matched (most specific first):\n")
    for position, rule in enumerate(ordered_rules(config), 1):
        out.write(f"  {position}. {rule.images}  [{rule.label}]  {_describe(config, rule)}\n")
    out.write(f"  -. anything else: {config.unmatched_images}\n")
    return EXIT_OK


def _describe(config: Config, rule: Any) -> str:
    from .verifiers import verifier_for

    parts = [rule.action]
    if rule.action == "verify":
        parts.extend(verifier_for(rule).describe(rule))
    if rule.action == "deny" and rule.message:
        parts.append(f"message={rule.message!r}")
    parts.append(f"mode={config.rule_mode(rule)}")
    if config.rule_deny_latest(rule):
        parts.append("denyLatest")
    if config.rule_require_digest(rule):
        parts.append("requireDigest")
    return " ".join(parts)
