# qbt-vpn-watchdog, built from this repository's pyproject.toml.
#
#   pkgs.python3Packages.callPackage ./package.nix { }
#
# Besides the `qbt-vpn-watchdog` command it installs `qbt-vpn-netns`, the
# namespace and tunnel bring-up script that the confinement module runs and the
# lab tests exercise (watchdog/qbt_vpn_watchdog/vpn-netns.sh), wrapped with the tools it calls,
# and the monitoring mixin under share/qbt-vpn-watchdog/: the Prometheus rules
# and their promtool tests, the Alertmanager example, the Grafana dashboard and
# the runbook (pyproject.toml's data-files put them there; postInstall makes
# sure), with `qbt-vpn-watchdog-mixin` to render them for another selector
# (the NixOS module's prometheusRules does).
{
  lib,
  buildPythonApplication,
  setuptools,
  prometheus-client,
  pyroute2,
  qbittorrent-api,
  dnspython,
  tenacity,
  requests,
  # web.config_file (exporter-toolkit's web-config.yml): the `web` extra, shipped here so
  # a NixOS host can use the same web config as its other exporters.
  bcrypt,
  pyyaml,
  # The git revision for qbtvpn_build_info (the flake passes self.rev); "" = unknown.
  revision ? "",
  urllib3,
  pytestCheckHook,
  hypothesis,
  watchdog, # PyPI's filesystem-events package: a test imports it beside ours
  makeWrapper,
  iproute2,
  wireguard-tools,
  nftables,
  coreutils,
  gawk,
  gnused,
  gnugrep,
}:

buildPythonApplication {
  pname = "qbt-vpn-watchdog";
  version = "0.1.0";
  pyproject = true;

  # Only what the build and the tests read: no .venv, no lab leftovers, and
  # nothing that changes the store path without changing the program.
  src = lib.fileset.toSource {
    root = ../.;
    fileset = lib.fileset.unions [
      ../pyproject.toml
      ../setup.py
      ../README.md
      ../watchdog
      ../tests
      ../alerts
      ../dashboards
      ../docs/runbook.md
    ];
  };

  build-system = [ setuptools ];

  dependencies = [
    prometheus-client
    pyroute2
    qbittorrent-api
    dnspython
    tenacity
    requests
    bcrypt
    pyyaml
    urllib3
  ];

  env.QBTVPN_REVISION = revision; # read by setup.py's build_py

  nativeBuildInputs = [ makeWrapper ];

  postInstall = ''
    install -Dm644 -t $out/share/qbt-vpn-watchdog/alerts alerts/qbt-vpn-watchdog.rules.yml alerts/alertmanager.yml
    install -Dm644 -t $out/share/qbt-vpn-watchdog/alerts/tests alerts/tests/*.test.yml
    install -Dm644 -t $out/share/qbt-vpn-watchdog/dashboards dashboards/qbt-vpn-watchdog.json
    install -Dm644 -t $out/share/qbt-vpn-watchdog/docs docs/runbook.md
    install -Dm755 watchdog/qbt_vpn_watchdog/vpn-netns.sh $out/libexec/qbt-vpn-watchdog/vpn-netns.sh
    makeWrapper $out/libexec/qbt-vpn-watchdog/vpn-netns.sh $out/bin/qbt-vpn-netns \
      --prefix PATH : ${
        lib.makeBinPath [
          iproute2
          wireguard-tools
          nftables
          coreutils
          gawk
          gnused
          gnugrep
        ]
      }
  '';

  nativeCheckInputs = [
    pytestCheckHook
    hypothesis
    watchdog
  ];

  # The build sandbox has no root, no network namespaces and no lab; those
  # tests are marked and run in this project's CI instead. tests/artefacts/test_nix.py
  # needs nix-instantiate and systemd-analyze, which the sandbox lacks.
  pytestFlagsArray = [
    "-m"
    "not root and not lab"
  ];
  disabledTestPaths = [
    "tests/artefacts/test_nix.py"
    "tests/artefacts/test_nixos_eval.py"
  ];

  pythonImportsCheck = [ "qbt_vpn_watchdog" ];

  meta = {
    description = "Watchdog and Prometheus exporter for qBittorrent confined to a WireGuard (AirVPN) tunnel";
    license = lib.licenses.mit;
    mainProgram = "qbt-vpn-watchdog";
    platforms = lib.platforms.linux;
  };
}
