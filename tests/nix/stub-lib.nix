# A small stand-in for the parts of nixpkgs' `lib` that nix/*.nix use, so the
# modules can be evaluated offline (no <nixpkgs> here). Semantics follow
# nixpkgs where the modules depend on them: mkIf/mkMerge/mkOverride are pushed
# down through attribute sets and discharged at option leaves, the highest
# priority wins, lists concatenate, scalars must agree, undeclared options are
# errors, and types check their values. Anything nix/ uses that is missing here
# fails the evaluation loudly, which is the point: add it with nixpkgs'
# meaning, never a looser one.
let
  inherit (builtins)
    all any attrNames concatLists concatMap elem filter foldl' genList head
    isAttrs isBool isFloat isFunction isInt isList isPath isString length
    listToAttrs mapAttrs match replaceStrings tail toJSON typeOf;

  unique = list: foldl' (acc: x: if elem x acc then acc else acc ++ [ x ]) [ ] list;
  showPath = path: builtins.concatStringsSep "." path;
  genAttrs = names: f: listToAttrs (map (n: { name = n; value = f n; }) names);

  # --- properties --------------------------------------------------------
  mkIf = condition: content: { _type = "if"; inherit condition content; };
  mkMerge = contents: { _type = "merge"; inherit contents; };
  mkOverride = priority: content: { _type = "override"; inherit priority content; };
  mkOrder = priority: content: { _type = "order"; inherit priority content; };

  # [{ value; priority; }] with the top level free of properties.
  discharge = prio: def:
    let t = def._type or null; in
    if !(isAttrs def) then [ { value = def; priority = prio; } ]
    else if t == "if" then
      (if !(isBool def.condition) then throw "mkIf called with a non-Boolean condition"
       else if def.condition then discharge prio def.content else [ ])
    else if t == "merge" then concatMap (discharge prio) def.contents
    else if t == "override" then discharge def.priority def.content
    else if t == "order" then discharge prio def.content
    else [ { value = def; priority = prio; } ];

  highest = defs:
    if defs == [ ] then [ ]
    else
      let best = foldl' (m: d: if d.priority < m then d.priority else m) (head defs).priority defs;
      in filter (d: d.priority == best) defs;

  # A definition of an attribute set -> list of attrsets of definitions, with
  # mkIf/mkOverride pushed into each attribute (the condition is not evaluated,
  # so which names exist never depends on config: no infinite recursion).
  pushDown = def:
    let t = def._type or null; in
    if t == "merge" then concatMap pushDown def.contents
    else if t == "if" then map (mapAttrs (n: v: mkIf def.condition v)) (pushDown def.content)
    else if t == "override" then map (mapAttrs (n: v: mkOverride def.priority v)) (pushDown def.content)
    else if t == "order" then pushDown def.content
    else if isAttrs def && t == null then [ def ]
    else throw "expected an attribute set, got ${typeOf def}";

  defsOf = pushed: name: concatMap (s: if s ? ${name} then [ s.${name} ] else [ ]) pushed;
  namesOf = pushed: unique (concatMap attrNames pushed);

  # --- types --------------------------------------------------------------
  mergeEqual = path: values:
    let v = head values; in
    if all (x: x == v) values then v
    else throw "The option `${showPath path}' has conflicting definition values: ${toJSON values}";

  # Leaf types discharge properties first, then merge plain values.
  mkOptionType = { name, check ? (_: true), merge ? mergeEqual, description ? name, ... }@a:
    a // {
      _type = "option-type";
      inherit name check description;
      mergeDefs = path: defs:
        let vs = map (d: d.value) (highest (concatMap (discharge 100) defs)); in
        if vs == [ ] then throw "The option `${showPath path}' is used but not defined."
        else if !(all check vs) then
          throw "The option `${showPath path}' is not of type ${description}: ${toJSON vs}"
        else merge path vs;
    };

  isStorePathString = s: isString s && match "/nix/store/.*" s != null;
  isPackage = v: isAttrs v && (v.type or null) == "derivation";
  isStringLike = v: isString v || isPath v || (isAttrs v && v ? outPath);

  # Attribute-set-shaped types: merge by name, element type per attribute.
  attrsOfWith = lazyNames: elemType: {
    _type = "option-type";
    name = "attrsOf";
    inherit elemType;
    description = "attribute set of (${elemType.description})";
    check = isAttrs;
    mergeDefs = path: defs:
      let
        pushed = concatMap pushDown defs;
        elemDefs = n: highest (concatMap (discharge 100) (defsOf pushed n));
        present = filter (n: elemDefs n != [ ]) (namesOf pushed);
      in
      genAttrs present (n: elemType.mergeDefs (path ++ [ n ]) (map (d: d.value) (elemDefs n)));
  };

  listOf = elemType: mkOptionType {
    name = "listOf";
    description = "list of (${elemType.description})";
    check = v: isList v && all elemType.check v;
    merge = path: values: concatLists values;
  };

  nullOr = t: mkOptionType {
    name = "nullOr";
    description = "null or ${t.description}";
    check = v: v == null || t.check v;
    merge = path: values:
      if all (v: v == null) values then null
      else if any (v: v == null) values then
        throw "The option `${showPath path}' is defined both null and not null"
      else t.mergeDefs path values;
  };

  oneOf = ts: mkOptionType {
    name = "oneOf";
    description = builtins.concatStringsSep " or " (map (t: t.description) ts);
    check = v: any (t: t.check v) ts;
    merge = path: values:
      let fits = filter (t: all t.check values) ts; in
      if fits == [ ] then throw "The option `${showPath path}' mixes types: ${toJSON values}"
      else (head fits).mergeDefs path values;
  };

  # Values of freeform/anything types: attrsets merge recursively, lists
  # concatenate, scalars must agree (nixpkgs' formats.toml type behaves so).
  anything = {
    _type = "option-type";
    name = "anything";
    description = "anything";
    check = _: true;
    mergeDefs = path: defs:
      let vs = highest (concatMap (discharge 100) defs); values = map (d: d.value) vs; in
      if values == [ ] then throw "The option `${showPath path}' is used but not defined."
      else if all isAttrs values && !(any isPackage values) then
        (attrsOfWith false anything).mergeDefs path values
      else if all isList values then concatLists values
      else mergeEqual path values;
  };

  # Options tree evaluation (used by submodule and by evalModules).
  isOption = v: isAttrs v && (v._type or null) == "option";

  mergeTree = { path, decls, defs, freeformType ? null }:
    let
      pushed = concatMap pushDown defs;
      names = unique (attrNames decls ++ namesOf pushed);
      one = n:
        let here = path ++ [ n ]; d = defsOf pushed n; in
        if decls ? ${n} then
          (if isOption decls.${n} then evalOption here decls.${n} d
           else mergeTree { path = here; decls = decls.${n}; defs = d; inherit freeformType; })
        else if freeformType != null then
          (let vs = highest (concatMap (discharge 100) d); in
           if vs == [ ] then null else (freeformType.elemType or freeformType).mergeDefs here (map (x: x.value) vs))
        else throw "The option `${showPath here}' does not exist.";
      vals = genAttrs names one;
      # Checked when this level is forced, without evaluating any value (as
      # NixOS reports definitions of options that do not exist).
      unknown = filter (n: !(decls ? ${n})) names;
    in
    if freeformType == null && unknown != [ ] then
      throw "The option `${showPath (path ++ [ (head unknown) ])}' does not exist."
    else
    # Freeform attributes whose definitions were all mkIf false disappear.
    if freeformType == null then vals
    else builtins.removeAttrs vals (filter (n: !(decls ? ${n}) && vals.${n} == null) names);

  evalOption = path: opt: defs:
    let
      type = opt.type or anything;
      withDefault = defs ++ (if opt ? default then [ (mkOverride 1500 opt.default) ] else [ ]);
      live = highest (concatMap (discharge 100) withDefault);
    in
    if live == [ ] then throw "The option `${showPath path}' is used but not defined."
    else type.mergeDefs path (map (d: mkOverride d.priority d.value) live);

  submoduleWith = { modules, freeform ? null }: {
    _type = "option-type";
    name = "submodule";
    description = "submodule";
    check = isAttrs;
    mergeDefs = path: defs:
      let
        name = if path == [ ] then "" else builtins.elemAt path (length path - 1);
        loaded = map (m: if isFunction m then m { inherit name config; lib = self; } else m) modules;
        options = foldl' recursiveUpdateDecls { } (map (m: m.options or { }) loaded);
        freeformType = foldl' (a: m: m.freeformType or a) null loaded;
        extra = concatMap (m: if m ? config then [ m.config ] else [ ]) loaded;
        config = mergeTree { inherit path freeformType; decls = options; defs = defs ++ extra; };
      in
      config;
  };

  recursiveUpdateDecls = a: b:
    a // mapAttrs (n: v:
      if a ? ${n} && !(isOption v) && !(isOption a.${n}) && isAttrs v then recursiveUpdateDecls a.${n} v
      else if a ? ${n} then throw "option `${n}' declared twice"
      else v) b;

  types = rec {
    inherit listOf nullOr oneOf anything mkOptionType;
    attrsOf = attrsOfWith false;
    lazyAttrsOf = attrsOfWith true;
    bool = mkOptionType { name = "bool"; check = isBool; };
    str = mkOptionType { name = "str"; check = isString; };
    nonEmptyStr = mkOptionType { name = "nonEmptyStr"; check = v: isString v && v != ""; };
    singleLineStr = mkOptionType { name = "singleLineStr"; check = v: isString v && match ".*\n.*" v == null; };
    strMatching = re: mkOptionType {
      name = "strMatching";
      description = "string matching ${re}";
      check = v: isString v && match re v != null;
    };
    lines = mkOptionType {
      name = "lines";
      check = isString;
      merge = path: values: builtins.concatStringsSep "\n" values;
    };
    int = mkOptionType { name = "int"; check = isInt; };
    float = mkOptionType { name = "float"; check = isFloat; };
    number = mkOptionType { name = "number"; check = v: isInt v || isFloat v; };
    port = ints.between 0 65535 // { description = "16 bit unsigned integer"; };
    ints = {
      between = lo: hi: mkOptionType {
        name = "intBetween";
        description = "integer between ${toString lo} and ${toString hi}";
        check = v: isInt v && v >= lo && v <= hi;
      };
      positive = mkOptionType { name = "positiveInt"; check = v: isInt v && v > 0; };
      unsigned = mkOptionType { name = "unsignedInt"; check = v: isInt v && v >= 0; };
    };
    numbers = {
      positive = mkOptionType { name = "positive number"; check = v: (isInt v || isFloat v) && v > 0; };
      nonnegative = mkOptionType { name = "nonnegative number"; check = v: (isInt v || isFloat v) && v >= 0; };
    };
    enum = values: mkOptionType {
      name = "enum";
      description = "one of ${toJSON values}";
      check = v: elem v values;
    };
    path = mkOptionType { name = "path"; check = isStringLike; };
    package = mkOptionType { name = "package"; check = v: isPackage v || isStringLike v; };
    either = a: b: oneOf [ a b ];
    submodule = m: submoduleWith { modules = [ m ]; };
    inherit submoduleWith;
  };

  # --- functions (nixpkgs names and meanings) -----------------------------
  escapeShellArg = arg:
    let s = toString arg; in
    if match "[[:alnum:],._+:@%/=-]+" s != null then s
    else "'${replaceStrings [ "'" ] [ "'\\''" ] s}'";

  self = {
    inherit types mkIf mkMerge mkOverride mkOrder mkOptionType escapeShellArg genAttrs unique;
    mkDefault = mkOverride 1000;
    mkOptionDefault = mkOverride 1500;
    mkForce = mkOverride 50;
    mkBefore = mkOrder 500;
    mkAfter = mkOrder 1500;
    mkOption = attrs: attrs // { _type = "option"; };
    mkEnableOption = name: self.mkOption {
      type = types.bool;
      default = false;
      description = "Whether to enable ${name}.";
    };
    mkPackageOption = pkgs: name: extra: self.mkOption ({
      type = types.package;
      default = if isList name then foldl' (a: n: a.${n}) pkgs name else pkgs.${name};
      description = "The package to use.";
    } // builtins.removeAttrs extra [ "default" "example" "extraDescription" ]);
    literalExpression = text: { _type = "literalExpression"; inherit text; };
    literalMD = text: { _type = "literalMD"; inherit text; };
    mdDoc = s: s;

    optional = c: x: if c then [ x ] else [ ];
    optionals = c: xs: if c then xs else [ ];
    optionalString = c: s: if c then s else "";
    optionalAttrs = c: a: if c then a else { };
    concatStringsSep = builtins.concatStringsSep;
    concatMapStringsSep = sep: f: xs: builtins.concatStringsSep sep (map f xs);
    concatMapStrings = f: xs: builtins.concatStringsSep "" (map f xs);
    concatMap = concatMap;
    mapAttrs = mapAttrs;
    mapAttrsToList = f: a: map (n: f n a.${n}) (attrNames a);
    filterAttrs = p: a: listToAttrs (concatMap (n: if p n a.${n} then [ { name = n; value = a.${n}; } ] else [ ]) (attrNames a));
    attrNames = attrNames;
    attrValues = builtins.attrValues;
    attrByPath = path: default: set:
      if path == [ ] then set
      else if isAttrs set && set ? ${head path} then self.attrByPath (tail path) default set.${head path}
      else default;
    hasPrefix = p: s: builtins.substring 0 (builtins.stringLength p) s == p;
    hasInfix = i: s: match ".*${replaceStrings [ "." "*" "+" "?" "(" ")" "[" "]" "{" "}" "|" "^" "$" "\\" ] [ "\\." "\\*" "\\+" "\\?" "\\(" "\\)" "\\[" "\\]" "\\{" "\\}" "\\|" "\\^" "\\$" "\\\\" ] i}.*" s != null;
    splitString = sep: s: filter isString (builtins.split (replaceStrings [ "." ] [ "\\." ] sep) s);
    replaceStrings = replaceStrings;
    stringLength = builtins.stringLength;
    toUpper = s: replaceStrings (self.lowerChars) (self.upperChars) s;
    lowerChars = self.stringToCharacters "abcdefghijklmnopqrstuvwxyz";
    upperChars = self.stringToCharacters "ABCDEFGHIJKLMNOPQRSTUVWXYZ";
    stringToCharacters = s: genList (p: builtins.substring p 1 s) (builtins.stringLength s);
    escapeShellArgs = args: builtins.concatStringsSep " " (map escapeShellArg args);
    getExe = pkg: "${pkg}/bin/${pkg.meta.mainProgram or pkg.pname or pkg.name}";
    getExe' = pkg: bin: "${pkg}/bin/${bin}";
    makeBinPath = pkgs: builtins.concatStringsSep ":" (map (p: "${p}/bin") pkgs);
    elem = elem;
    any = any;
    all = all;
    head = head;
    length = length;
    filter = filter;
    foldl' = foldl';
    range = first: last: genList (n: first + n) (last - first + 1);
    toInt = s: builtins.fromJSON s;
    max = a: b: if a > b then a else b;
    min = a: b: if a < b then a else b;
    sum = foldl' (a: b: a + b) 0;
    isStorePath = isStorePathString;
    flatten = x: if isList x then concatMap self.flatten x else [ x ];
    recursiveUpdate = a: b:
      a // mapAttrs (n: v: if isAttrs v && a ? ${n} && isAttrs a.${n} then self.recursiveUpdate a.${n} v else v) b;
    versionAtLeast = a: b: builtins.compareVersions a b >= 0;
    generators = {
      # nixpkgs' toINI with its defaults: [section] then key=value lines.
      toINI = { mkKeyValue ? (k: v: "${k}=${self.generators.mkValueStringDefault { } v}"), ... }: attrs:
        builtins.concatStringsSep "\n" (map (section:
          "[${section}]\n" + builtins.concatStringsSep "\n"
            (map (k: mkKeyValue k attrs.${section}.${k}) (attrNames attrs.${section})) + "\n"
        ) (attrNames attrs));
      mkValueStringDefault = { }: v:
        if isBool v then (if v then "true" else "false")
        else if isInt v || isFloat v then toString v
        else if isString v then v
        else throw "generators.mkValueStringDefault: cannot render ${typeOf v}";
    };
    fileset = {
      unions = xs: xs;
      toSource = { root, fileset }: root;
    };
    cleanSource = src: src;
    maintainers = { };
    licenses = { mit = { spdxId = "MIT"; }; };
    platforms = { linux = [ "x86_64-linux" "aarch64-linux" ]; };
    inherit mergeTree evalOption recursiveUpdateDecls isOption discharge;
  };
in
self
