# Evaluates NixOS modules offline against stub-lib.nix, stub-pkgs.nix and
# stand-ins for the NixOS options the modules set, and returns what the tests
# check: every enabled systemd service as plain data, the firewall ports,
# /etc files, the watchdog's settings, and the failed assertions.
#
#   nix-instantiate --eval --strict --json tests/nix/eval.nix \
#     --arg modules '[ ./nix/module-confinement.nix ]' --arg config '{ ... }'
{ modules ? [ ], config ? { } }:
let
  lib = import ./stub-lib.nix;
  pkgs = import ./stub-pkgs.nix { inherit lib; };
  inherit (lib) types mkOption;

  opt = type: default: mkOption { inherit type default; };
  strs = opt (types.listOf types.str) [ ];

  # The NixOS options nix/ sets, with nixpkgs' types. Setting any other
  # option is an error ("does not exist"), as in NixOS.
  unitOptions = {
    enable = opt types.bool true;
    description = opt types.str "";
    documentation = strs;
    after = strs; before = strs; wants = strs; requires = strs; requisite = strs;
    bindsTo = strs; partOf = strs; upholds = strs; conflicts = strs;
    wantedBy = strs; requiredBy = strs; upheldBy = strs;
    unitConfig = opt (types.attrsOf types.anything) { };
    serviceConfig = opt (types.attrsOf types.anything) { };
    environment = opt (types.attrsOf (types.nullOr types.str)) { };
    path = opt (types.listOf types.package) [ ];
    script = opt types.lines "";
    preStart = opt types.lines "";
    postStart = opt types.lines "";
    restartTriggers = opt (types.listOf types.anything) [ ];
    reloadTriggers = opt (types.listOf types.anything) [ ];
    restartIfChanged = opt types.bool true;
    stopIfChanged = opt types.bool true;
    startLimitBurst = opt (types.nullOr types.int) null;
    startLimitIntervalSec = opt (types.nullOr types.int) null;
  };

  nixosOptions = {
    assertions = opt (types.listOf types.anything) [ ];
    warnings = strs;
    systemd = {
      services = opt (types.attrsOf (types.submodule { options = unitOptions; })) { };
      tmpfiles.rules = strs;
    };
    networking = {
      hostName = opt types.str "nixos";
      firewall = {
        enable = opt types.bool true;
        allowedTCPPorts = opt (types.listOf types.port) [ ];
        allowedUDPPorts = opt (types.listOf types.port) [ ];
        interfaces = opt (types.attrsOf (types.submodule {
          options.allowedTCPPorts = opt (types.listOf types.port) [ ];
          options.allowedUDPPorts = opt (types.listOf types.port) [ ];
        })) { };
        trustedInterfaces = strs;
      };
    };
    boot.kernel.sysctl = opt (types.attrsOf types.anything) { };
    boot.kernelModules = strs;
    environment = {
      etc = opt (types.attrsOf (types.submodule {
        options.text = opt (types.nullOr types.lines) null;
        options.source = opt (types.nullOr types.path) null;
        options.mode = opt types.str "symlink";
      })) { };
      systemPackages = opt (types.listOf types.package) [ ];
    };
    users = {
      users = opt (types.attrsOf types.anything) { };
      groups = opt (types.attrsOf types.anything) { };
    };
    security.polkit = {
      enable = opt types.bool false;
      extraConfig = opt types.lines "";
    };
    services = {
      tailscale.enable = opt types.bool false;
      openssh.enable = opt types.bool false;
      prometheus = {
        enable = opt types.bool false;
        scrapeConfigs = opt (types.listOf types.anything) [ ];
      };
    };
    system.stateVersion = opt types.str "25.05";
  };

  # --- a minimal evalModules: imports (deduplicated by file), options, config
  load = m:
    let
      key = if builtins.isPath m then toString m else null;
      f = if builtins.isPath m then import m else m;
      v = if builtins.isFunction f
        then f (builtins.intersectAttrs (builtins.functionArgs f) moduleArgs)
        else f;
      # As in NixOS: only `options` or `config` make a module structured;
      # otherwise everything but imports/meta is config.
      structured = v ? options || v ? config;
    in {
      inherit key;
      options = v.options or { };
      config = if structured then v.config or { }
        else builtins.removeAttrs v [ "imports" "meta" "_file" "disabledModules" ];
      imports = v.imports or [ ];
    };

  closure = todo: seen: acc:
    if todo == [ ] then acc
    else
      let
        m = load (builtins.head todo);
        rest = builtins.tail todo;
      in
      if m.key != null && builtins.elem m.key seen then closure rest seen acc
      else closure (m.imports ++ rest) (seen ++ [ m.key ]) (acc ++ [ m ]);

  loaded = closure (modules ++ [ config ]) [ ] [ ];
  declared = builtins.foldl' lib.recursiveUpdateDecls nixosOptions (map (m: m.options) loaded);
  cfg = lib.mergeTree { path = [ ]; decls = declared; defs = map (m: m.config) loaded; };
  moduleArgs = { config = cfg; inherit lib pkgs; options = declared; utils = { }; modulesPath = "/stub/nixos/modules"; };

  failed = builtins.filter (a: !a.assertion) cfg.assertions;

  # Force every level of declared option sets, so that a definition of an
  # option that does not exist is an error even when nothing reads it.
  walk = decls: value: builtins.all (n:
    lib.isOption decls.${n} || (builtins.isAttrs value.${n} && walk decls.${n} value.${n})
  ) (builtins.attrNames decls);
in
if !(walk declared cfg) then throw "unreachable"
else if failed != [ ] then
  throw ("Failed assertions:\n" + lib.concatMapStringsSep "\n" (a: "- ${a.message}") failed)
else {
  services = lib.filterAttrs (n: s: s.enable) cfg.systemd.services;
  firewall = { inherit (cfg.networking.firewall) allowedTCPPorts allowedUDPPorts interfaces; };
  etc = lib.mapAttrs (n: e: { inherit (e) text mode; source = if e.source == null then null else toString e.source; }) cfg.environment.etc;
  sysctl = cfg.boot.kernel.sysctl;
  tmpfiles = cfg.systemd.tmpfiles.rules;
  users = cfg.users;
  polkit = cfg.security.polkit.extraConfig;
  prometheus = cfg.services.prometheus.scrapeConfigs;
  warnings = cfg.warnings;
  confinement = if cfg.services ? qbittorrent-vpn && cfg.services.qbittorrent-vpn.enable
    then cfg.services.qbittorrent-vpn.generated else null;
  watchdogSec = if cfg.services ? qbt-vpn-watchdog then cfg.services.qbt-vpn-watchdog.watchdogSec else null;
  watchdogSettings = if cfg.services ? qbt-vpn-watchdog then cfg.services.qbt-vpn-watchdog.settings else null;
}
