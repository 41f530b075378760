"""``fedsynth simulate | certs | site-keys | enrol | policy``: the CLI of the federation stage."""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fedsynth.federation.live_page import LoopbackServer

__all__ = ["register"]

log = logging.getLogger(__name__)


def _simulate(args: argparse.Namespace) -> int:
    from fedsynth.federation.config import load_scenario
    from fedsynth.federation.simulation import run_simulated_study
    from fedsynth.federation.study_dir import StudyLayout
    from fedsynth.runtime import quiet_console

    scenario = load_scenario(args.scenario)
    log_file = StudyLayout(Path(args.out)).study_log
    live = sys.stderr.isatty() and not args.verbose  # off a terminal: one logged line per phase instead
    quiet_console(log_file, verbose=args.verbose, live=live)
    print(f"study '{scenario.name}': {scenario.cohort.sites} simulated sites in {args.out} "
          f"(full log: {log_file}{'' if args.verbose else '; -v shows it here'})")
    page = None
    if args.page is not None:
        from fedsynth.federation.live_page import LivePage

        page = LivePage(Path(args.out), port=args.page)
        print(f"  live page: {page.start()}")
    t0 = time.perf_counter()
    run = run_simulated_study
    if scenario.cohort.splits > 1:
        from fedsynth.federation.splits import run_split_study

        print(f"  {scenario.cohort.splits} patient splits, each a whole study: {args.out}/split-<k>/")
        run = run_split_study
    from fedsynth.federation.live_view import LiveView, PhaseLines

    view: contextlib.AbstractContextManager = contextlib.nullcontext()
    if live:
        view = LiveView(Path(args.out))
    elif not args.verbose:
        view = PhaseLines(Path(args.out))
    try:
        with view:
            report = run(scenario, Path(args.out), cpus_per_site=args.cpus_per_site,
                         show_progress=not live, audit_dir=Path(args.audit_dir) if args.audit_dir else None,
                         verbose=args.verbose)
    finally:
        if page is not None:
            page.stop()
    print(f"study '{scenario.name}' finished in {time.perf_counter() - t0:.0f} s")
    machine = report.get("machine") or {}
    if machine:
        print(f"  machine: {machine['conv_gflops']:.1f} GFLOP/s on the conv probe ({machine['cpu']}, "
              f"{machine['cores']} cores, {machine['threads']} threads)")
    for phase, sec in report.get("wall_seconds", {}).items():
        print(f"  {phase:<24} {sec:8.1f} s")
    from fedsynth.report import validate_report
    from fedsynth.report.schema import metric_mean

    for name, m in validate_report(report).methods.items():
        psnr, ssim = metric_mean(m.pooled.psnr), metric_mean(m.pooled.ssim)
        if psnr is not None and ssim is not None:
            print(f"  {name:<18} PSNR {psnr:6.2f}  SSIM {ssim:.4f}  (n={m.pooled.n})")
    verdicts = report.get("patient_comparisons") or []
    if verdicts:
        print("verdicts (the patient as the unit; Holm-corrected):")
        for c in verdicts:
            print(f"  {c.get('verdict_text', c.get('verdict'))}")
    if report.get("missing_sites"):
        print(f"  missing sites: {', '.join(report['missing_sites'])}")
    print(f"report: {Path(args.out) / 'report.json'} and report.html")
    return 0


def _serve_until_interrupted(server: LoopbackServer, what: str) -> int:
    from fedsynth.errors import ConfigError

    try:
        url = server.start()
    except OSError as err:
        raise ConfigError(f"cannot listen on {server.host}:{server.port}: {err.strerror or err}") from None
    print(f"{what}: {url} (Ctrl-C stops it)")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return 0


def _site_review(args: argparse.Namespace) -> int:
    from fedsynth.federation.live_page import LoopbackServer
    from fedsynth.federation.release_review import build_review_app, pending_reviews
    from fedsynth.federation.site_session import resolve_site

    runtime = resolve_site({"site-config": str(args.config)})
    n = len(pending_reviews(runtime.workdir))
    server = LoopbackServer(build_review_app(runtime), args.host, args.port, name="release review")
    return _serve_until_interrupted(server, f"release review of {runtime.site_id} ({n} bundle(s) waiting)")


def _watch(args: argparse.Namespace) -> int:
    from fedsynth.errors import ConfigError
    from fedsynth.federation.live_view import LiveView

    if not args.dir.is_dir():
        raise ConfigError(f"{args.dir}: no such study directory")
    try:
        with LiveView(args.dir) as view:  # reads the study once per redraw; the loop only looks at what it drew
            while not view.finished:
                time.sleep(1.0)
    except KeyboardInterrupt:
        pass
    return 0


def _study_page(args: argparse.Namespace) -> int:
    from fedsynth.errors import ConfigError
    from fedsynth.federation.live_page import LivePage

    if not args.dir.is_dir():
        raise ConfigError(f"{args.dir}: no such study directory")
    return _serve_until_interrupted(LivePage(args.dir, host=args.host, port=args.port), f"live page of {args.dir}")


def _certs(args: argparse.Namespace) -> int:
    from fedsynth.federation.certs import provision

    res = provision(Path(args.out), tuple(args.server_name), force=args.force)
    print(f"CA: {res.ca_cert}\nSuperLink: {res.server_cert} {res.server_key}\nregistry: {res.registry}\n"
          "each site makes its own keys (fedsynth site-keys) and hands over the public halves "
          "(fedsynth enrol; flwr supernode register ... --name <site-id>)")
    return 0


def _site_keys(args: argparse.Namespace) -> int:
    from fedsynth.federation.certs import make_site_keys

    k = make_site_keys(Path(args.out), force=args.force)
    print(f"private (keep here): {k.supernode_private} {k.signing_private}\n"
          f"public (give the coordinator): {k.supernode_public} {k.signing_public}")
    return 0


def _enrol(args: argparse.Namespace) -> int:
    from fedsynth.federation.certs import enrol

    dest = enrol(Path(args.registry), args.site, Path(args.signing_key), args.policy_digest)
    print(f"enrolled {args.site}: {dest}" + (f" (policy {args.policy_digest})" if args.policy_digest else ""))
    return 0


def _policy(args: argparse.Namespace) -> int:
    import json

    from fedsynth.config import load_toml
    from fedsynth.federation.config import SiteSettings
    from fedsynth.federation.study_dir import policy_file
    from fedsynth.io_utils import write_bytes_atomic

    settings = load_toml(args.site_toml, SiteSettings)
    digest = settings.privacy.digest()
    print(json.dumps(settings.privacy.model_dump(mode="json"), indent=2))
    print(f"site {settings.site.id}: policy digest {digest}")
    if args.register:
        path = policy_file(args.register, settings.site.id)
        write_bytes_atomic(path, digest.encode())
        print(f"registered: {path}")
    return 0


def _app_key(args: argparse.Namespace) -> int:
    from fedsynth.federation.app_registry import make_app_key

    priv, pub, yaml_path = make_app_key(args.out, force=args.force)
    print(f"private (keep where packages are signed): {priv}\npublic: {pub}\n"
          f"give every site operator {yaml_path} (flower-supernode --trusted-entities)")
    return 0


def _app_sign(args: argparse.Namespace) -> int:
    from fedsynth.federation.app_registry import sign_app

    app = sign_app(args.key, args.registry, app=args.app, fab=args.fab)
    print(f"signed {app.spec} sha256:{app.sha256} ({len(app.verifications)} signature(s))\n"
          f"run it with: flwr run {app.spec} <connection> --stream")
    return 0


def _app_registry(args: argparse.Namespace) -> int:
    from fedsynth.federation.app_registry import AppRegistry, signed_apps

    reg = AppRegistry(args.registry, args.host, args.port)
    apps = ", ".join(a.spec for a in signed_apps(args.registry)) or "none yet"
    print(f"app registry on {reg.url} (FLWR_SUPERGRID_API_URL for the SuperLink); signed apps: {apps}", flush=True)
    try:
        reg.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        reg.close()
    return 0


def _listen_args(p: argparse.ArgumentParser, port: int, beyond: str) -> None:
    """``--port`` and ``--host`` of a page served on loopback unless the operator names another address."""
    p.add_argument("--port", type=int, default=port, help=f"port (default {port}; 0 = a free one)")
    p.add_argument("--host", default="127.0.0.1", help=f"address to listen on (default 127.0.0.1; {beyond})")


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``simulate``, ``certs``, ``site-keys``, ``enrol``, ``policy`` and the ``app-*`` commands."""
    p = sub.add_parser(
        "simulate",
        help="run a whole federated study locally on Flower's Simulation Engine",
        description="Make the scenario's cohort, run every site and the coordinator on Flower's "
        "Simulation Engine (127.0.0.1 only) and write OUT/report.json and OUT/report.html. "
        "Re-running with the same OUT resumes: finished phases are skipped.",
    )
    p.add_argument("scenario", nargs="?", default="default",
                   help="scenario name in simulations/ (default, mri_sr) or a TOML path (default: default)")
    p.add_argument("--out", required=True, help="study directory (pool, models, report)")
    p.add_argument("--cpus-per-site", type=float, default=None,
                   help="CPUs Ray reserves per site app (default: all sites at once, cores / sites, at most 1)")
    p.add_argument("--audit-dir", help="keep a copy of every message a site sends here (leak audit)")
    p.add_argument("--page", type=int, metavar="PORT", nargs="?", const=0, default=None,
                   help="serve the live study page on http://127.0.0.1:PORT/ while it runs (no PORT: a free one)")
    p.set_defaults(func=_simulate)

    w = sub.add_parser(
        "study-page",
        help="serve a study directory's live page (read-only) on loopback until Ctrl-C",
        description="Phases with timings, sites and their state, pool size and acceptance rate per site, bytes "
        "per method, learning curves as they come, the certificates and report.html at the end; read from DIR "
        "as the study writes it (simulation or deployment), nothing is ever written.",
    )
    w.add_argument("dir", type=Path, metavar="DIR", help="the study directory")
    _listen_args(w, 8765, "anything else exposes the page beyond this machine")
    w.set_defaults(func=_study_page)

    v = sub.add_parser(
        "watch",
        help="draw the live view of a running study directory on this terminal (simulation or deployment)",
        description="The same view `fedsynth simulate` draws: phases with their times, the current request "
        "site by site, elapsed and time left; read from DIR as the coordinator writes it, until the study's "
        "report is written or Ctrl-C. For a coordinator run with `flwr run ... --stream`, in a second terminal.",
    )
    v.add_argument("dir", type=Path, metavar="DIR", help="the study directory")
    v.set_defaults(func=_watch)

    r = sub.add_parser(
        "site-review",
        help="site: serve the release review page on loopback (bundles wait here when [privacy] review = true)",
        description="Show each image the gate accepted for a pending publish request beside its nearest real "
        "training slices and distances; release or withhold image by image, or reject the whole bundle. The "
        "decision is final and goes into WORKDIR/review/audit.jsonl; the coordinator gets the released images, "
        "signed, on its next request. Runs until Ctrl-C.",
    )
    r.add_argument("--config", required=True, type=Path, help="the site TOML")
    _listen_args(r, 8790, "the page shows real patient slices: keep it local")
    r.set_defaults(func=_site_review)

    c = sub.add_parser(
        "certs",
        help="coordinator: create the study CA, the SuperLink TLS certificate and the enrolment registry",
        description="Write ca.crt/ca.key and server.pem/server.key (SAN 127.0.0.1, localhost and any "
        "--server-name) and create OUT/coordinator/site-keys. No site key is made here: each site runs "
        "`fedsynth site-keys` and hands over its public halves.",
    )
    c.add_argument("--out", required=True, help="directory for the key material")
    c.add_argument("--server-name", action="append", default=["127.0.0.1", "localhost"],
                   help="extra SAN for the SuperLink certificate (repeatable)")
    c.add_argument("--force", action="store_true", help="replace an existing CA")
    c.set_defaults(func=_certs)

    k = sub.add_parser(
        "site-keys",
        help="site: create this site's SuperNode key and certificate-signing key (private halves stay here)",
        description="Write OUT/supernode (+.pub; EC P-384, OpenSSH) for SuperNode authentication and "
        "OUT/signing/site.key (+site.pub; Ed25519) for signing publication certificates, private keys 0600.",
    )
    k.add_argument("--out", required=True, type=Path, help="the site's key directory")
    k.add_argument("--force", action="store_true", help="replace existing keys (then enrol again)")
    k.set_defaults(func=_site_keys)

    e = sub.add_parser(
        "enrol",
        help="coordinator: register a site's public signing key (and policy digest) in the registry",
        description="Copy a site's public signing key into the registry as <site-id>.pub (and its policy "
        "digest as <site-id>.policy). Register its SuperNode key with Flower under the same name: "
        "`flwr supernode register supernode.pub <connection> --name <site-id>`.",
    )
    e.add_argument("--registry", required=True, type=Path, help="the coordinator's site-keys directory")
    e.add_argument("--site", required=True, help="the site id (as in its site TOML)")
    e.add_argument("--signing-key", required=True, type=Path, help="the site's signing/site.pub")
    e.add_argument("--policy-digest", help="the digest `fedsynth policy` printed at the site")
    e.set_defaults(func=_enrol)

    q = sub.add_parser(
        "policy",
        help="show a site's privacy policy and its digest (and register it with the coordinator)",
        description="Print the [privacy] policy of a site TOML (the documented default when it has none) and the "
        "digest every certificate of the site carries. The coordinator rejects certificates whose policy digest "
        "differs from the registered one; register it out of band, like the site's public key.",
    )
    q.add_argument("site_toml", type=Path, help="the site's TOML (sites/*.toml)")
    q.add_argument("--register", type=Path, metavar="DIR",
                   help="also write DIR/<site-id>.policy (the coordinator's site-keys registry)")
    q.set_defaults(func=_policy)

    a = sub.add_parser(
        "app-key",
        help="coordinator: create the app-signing key and the trusted-entities.yaml every site installs",
        description="Write OUT/app-signing.key (Ed25519, OpenSSH, 0600), OUT/app-signing.pub and "
        "OUT/trusted-entities.yaml. SuperNodes started with --trusted-entities run only app packages "
        "signed by a key listed there.",
    )
    a.add_argument("--out", required=True, type=Path, help="directory for the key")
    a.add_argument("--force", action="store_true", help="replace an existing key")
    a.set_defaults(func=_app_key)

    s = sub.add_parser(
        "app-sign",
        help="coordinator: build the study's app package (FAB), sign it and store it in the app registry",
        description="Build the Flower app at --app with Flower's builder (or take --fab), sign "
        "timestamp||sha256(FAB) with the Ed25519 key, and store FAB and signature under "
        "REGISTRY/<publisher>/<app>/<version>.fab|.sig.json. A stored version is never replaced by other bytes.",
    )
    s.add_argument("--key", required=True, type=Path, help="app-signing.key (fedsynth app-key)")
    s.add_argument("--registry", required=True, type=Path, help="the app registry directory")
    s.add_argument("--app", default=".", type=Path, help="the Flower app's directory (default: .)")
    s.add_argument("--fab", type=Path, help="sign this already built .fab instead")
    s.set_defaults(func=_app_sign)

    r = sub.add_parser(
        "app-registry",
        help="coordinator: serve the signed app packages to the SuperLink (loopback)",
        description="Serve REGISTRY's signed FABs as the app hub the SuperLink fetches from: start the "
        "SuperLink with FLWR_SUPERGRID_API_URL set to the printed URL (server/start-superlink.sh does), "
        "then `flwr run @publisher/app==x.y.z <connection>`.",
    )
    r.add_argument("--registry", required=True, type=Path, help="the app registry directory")
    r.add_argument("--host", default="127.0.0.1", help="interface (default 127.0.0.1; keep it on loopback)")
    r.add_argument("--port", type=int, default=8300, help="port (default 8300)")
    r.set_defaults(func=_app_registry)
