# Stand-in packages for offline evaluation: each is a derivation-shaped
# attribute set whose outPath is /nix/store/stub-NAME, so "${pkg}/bin/x"
# renders as in NixOS. The test maps these paths to stub executables before
# running systemd-analyze verify. Builders return their arguments so tests can
# inspect them (package.nix's dependencies, a script's text).
{ lib }:
let
  drv = name: extra: {
    type = "derivation";
    inherit name;
    pname = name;
    outPath = "/nix/store/stub-${name}";
    meta = { mainProgram = name; } // (extra.meta or { });
  } // builtins.removeAttrs extra [ "meta" ];

  named = names: builtins.listToAttrs (map (n: { name = n; value = drv n { }; }) names);

  # python3Packages.callPackage: fills a function's arguments from this set,
  # then from the explicit overrides, like nixpkgs' callPackage.
  pythonPackages = top: self: named [
    "setuptools" "prometheus-client" "pyroute2" "qbittorrent-api" "dnspython"
    "tenacity" "requests" "urllib3" "pytest" "hypothesis" "pytestCheckHook" "watchdog"
    "bcrypt" "pyyaml"
  ] // {
    inherit lib;
    buildPythonApplication = args: drv "${args.pname}-${args.version}" {
      inherit (args) pname version;
      meta = args.meta or { };
      passthru = args.passthru or { };
      buildArgs = args;
    };
    callPackage = f: overrides:
      let fn = if builtins.isFunction f then f else import f; in
      fn (builtins.intersectAttrs (builtins.functionArgs fn) (top // self // overrides));
  };

  toml = {
    # nixpkgs' formats.toml type: attrsets of TOML values, merged recursively.
    type = lib.types.attrsOf lib.types.anything;
    generate = name: value: drv name { settingsValue = value; };
  };
  top = named [
    "coreutils" "iproute2" "wireguard-tools" "nftables" "qbittorrent-nox"
    "util-linux" "systemd" "bash" "gnugrep" "gnused" "procps" "curl" "makeWrapper" "gawk"
  ] // rec {
  python3Packages = let self = pythonPackages top self; in self;
  python3 = drv "python3" { pkgs = python3Packages; };
  formats = { toml = { }: toml; };
  writeText = name: text: drv name { inherit text; };
  writeShellScript = name: text: drv name { inherit text; };
  writeShellApplication = { name, text, runtimeInputs ? [ ], ... }:
    drv name { inherit text runtimeInputs; };
  runCommand = name: env: cmd: drv name { inherit cmd; };
  testers.runNixOSTest = args: drv "nixos-test-${args.name}" { testArgs = args; };
  };
in
top
