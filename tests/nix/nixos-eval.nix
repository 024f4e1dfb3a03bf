# A copy of ../shared/nixos-eval/eval.nix (the project's harness), for a
# machine without that folder: tests/support/nixos_eval.py uses it only with
# NIXPKGS=/path/to/nixpkgs, where the frozen tree and its shims are not
# needed. tests/artefacts/test_nixos_eval.py fails when the two differ.
#
# Evaluate a NixOS system, offline, against real NixOS modules (see README.md beside this file).
#
#   nix-instantiate --eval --strict --json ../shared/nixos-eval/eval.nix \
#     --arg modules '[ /abs/path/nix/example-host.nix /abs/path/extra.nix ]' \
#     --arg units '[ "qbt-vpn-watchdog" ]'
#
# Prints JSON: failedAssertions, warnings, the unit files' text and serviceConfig of `units`,
# boot.kernel.sysctl, environment.etc names, networking.nftables, and the toplevel .drv path
# (forcing that evaluates every module of the system; nothing is built or written).
#
# With `--arg nixpkgs /path/to/a/nixpkgs/checkout` it evaluates against that tree instead, with
# its own lib and no shims: today's NixOS, where a checkout exists.
{ modules, units ? [ ], toplevel ? true, nixpkgs ? null }:
let
  here = ./.;
  frozen = nixpkgs == null;
  tree = if frozen then here + "/nixpkgs" else nixpkgs;
  # Frozen tree: the current module system (nixpkgs lib 26.11pre), plus two names that the 2020
  # NixOS modules still call and the current lib has removed.
  lib = if frozen then (import (here + "/lib/lib")).extend (self: super: {
    replaceChars = builtins.replaceStrings;
    mapAttrsFlatten = super.mapAttrsToList;
  }) else import (tree + "/lib");
  # pkgs.formats.toml is newer than the 2020 tree (nixpkgs pkgs/pkgs-lib/formats.nix, 2023).
  formatsOverlay = self: super: {
    formats = (super.formats or { }) // {
      toml = { }: {
        type = with lib.types; let
          valueType = oneOf [ bool int float str path (attrsOf valueType) (listOf valueType) ] // {
            description = "TOML value";
          };
        in valueType;
        generate = name: value: self.runCommand name {
          value = builtins.toJSON value;
          passAsFile = [ "value" ];
        } ''cp "$valuePath" "$out"'';
      };
    };
  };
  # What any NixOS system needs besides the modules under test.
  baseHost = {
    nixpkgs.overlays = lib.optional frozen formatsOverlay;
    fileSystems."/" = lib.mkDefault { device = "/dev/vda"; fsType = "ext4"; };
    boot.loader.grub.enable = lib.mkDefault false;
    system.stateVersion = lib.mkDefault "20.09";
    # The 2020 manual re-evaluates every module in a way the current lib rejects.
    documentation.nixos.enable = lib.mkIf frozen false;
  };
  sys = import (tree + "/nixos/lib/eval-config.nix") {
    system = "x86_64-linux";
    inherit lib;
    modules = modules ++ [ baseHost ];
  };
  c = sys.config;
  present = builtins.filter (n: c.systemd.services ? ${n}) units;
in
{
  failedAssertions = map (a: a.message) (builtins.filter (a: !a.assertion) c.assertions);
  warnings = c.warnings;
  missingUnits = builtins.filter (n: !(c.systemd.services ? ${n})) units;
  unitTexts = lib.genAttrs present (n: c.systemd.units."${n}.service".text);
  serviceConfig = lib.genAttrs present (n: c.systemd.services.${n}.serviceConfig);
  sysctl = c.boot.kernel.sysctl;
  etc = builtins.attrNames c.environment.etc;
  nftables = { inherit (c.networking.nftables) enable; ruleset = if c.networking.nftables.enable then c.networking.nftables.ruleset else null; };
} // lib.optionalAttrs toplevel { toplevelDrv = c.system.build.toplevel.drvPath; }
