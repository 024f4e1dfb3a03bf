# Stand-in packages for the frozen NixOS 20.09 tree only: that tree's package
# set predates what nix/package.nix calls (iproute2, qbittorrent-api,
# lib.fileset) and has no meta.mainProgram on qbittorrent-nox. Each stand-in
# is an empty derivation with the program name the modules run. Against a
# real nixpkgs checkout none of this is loaded and nix/package.nix is
# evaluated for real.
{ pkgs, ... }:
let
  standIn = name: (pkgs.runCommand name { } "mkdir -p $out/bin") // { meta.mainProgram = name; };
in
{
  nixpkgs.overlays = [
    (self: super: {
      qbt-vpn-watchdog = standIn "qbt-vpn-watchdog";
      qbittorrent-nox = standIn "qbittorrent-nox";
      # The second confined unit of nix/example-host-second-unit.nix (services.jackett,
      # in 20.09's modules; the frozen tree holds no pkgs/servers/jackett).
      jackett = standIn "jackett";
    })
  ];
}
