#!/usr/bin/env bash
# Vendor the JavaScript the rendered book needs, so every page works offline (no CDN):
#   require.js                          (AMD loader the ipywidgets HTML manager needs)
#   @jupyter-widgets/html-manager 1.x   dist/embed-amd.js (bundles @jupyter-widgets/base, controls and output,
#                                       so no module is fetched from a CDN) + its Font Awesome fonts
#   MathJax 3                           es5/tex-chtml.js + CHTML woff-v2 fonts + the TeX extensions, a11y and ui
#                                       components it may load on demand
# Each package is fetched with `npm pack` from the npm registry into a temporary folder, checked against the
# pinned sha512 integrity below, and the needed files are copied into DEST (default book/_static/vendor/, which
# is gitignored). _config.yml points myst-nb (`nb_ipywidgets_js`) and Sphinx (`mathjax_path`) at these files.
# Idempotent: does nothing when DEST already holds these exact versions (a stamp file records them).
# Regenerate: `rm -rf book/_static/vendor && make vendor`. To upgrade, change a version AND its integrity
# (`npm view <pkg>@<version> dist.integrity`).
set -euo pipefail

DEST=${1:-book/_static/vendor}

REQUIREJS=requirejs@2.3.8
REQUIREJS_SHA=sha512-7/cTSLOdYkNBNJcDMWf+luFvMriVm7eYxp4BcFCsAX0wF421Vyce5SXP17c+Jd5otXKGNehIonFlyQXSowL6Mw==
HTMLMANAGER=@jupyter-widgets/html-manager@1.0.15
HTMLMANAGER_SHA=sha512-5thBIV6ymNgmPVOHvzx+gGy8ZSKmSazhtGw4/c4xJDVzRhG9PTeQsRjF3FUTopvFi//SABeNz1yp47bCrJ3CQA==
MATHJAX=mathjax@3.2.2
MATHJAX_SHA=sha512-Bt+SSVU8eBG27zChVewOicYs7Xsdt40qm4+UpHyX7k0/O9NliPc+x77k1/FEsPsjKPZGJvtRZM1vO+geW0OhGw==

WANT="$REQUIREJS $HTMLMANAGER $MATHJAX"
STAMP="$DEST/.versions"
# The files _config.yml references (if any is missing, vendor again).
REQUIRED=(require.js html-manager/embed-amd.js mathjax/tex-chtml.js mathjax/output/chtml/fonts/woff-v2/MathJax_Main-Regular.woff)

have_all() {
  [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$WANT" ] || return 1
  for f in "${REQUIRED[@]}"; do [ -s "$DEST/$f" ] || return 1; done
}

if have_all; then
  echo "vendor: $DEST up to date ($WANT)"
  exit 0
fi

command -v npm >/dev/null || { echo "vendor: npm not found (Debian: apt-get install npm; or run 'make system')" >&2; exit 1; }

TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

fetch() {  # fetch PKG@VERSION SHA512 -> extracts into $TMP/<name>/package
  local spec=$1 sha=$2 name tgz got
  name=$(echo "${spec%@*}" | tr -d '@' | tr '/' '-')
  mkdir -p "$TMP/$name"
  tgz=$(cd "$TMP/$name" && npm pack --silent "$spec" 2>/dev/null | tail -n 1)
  [ -f "$TMP/$name/$tgz" ] || { echo "vendor: npm pack $spec failed (is the npm registry reachable?)" >&2; exit 1; }
  got="sha512-$(openssl dgst -sha512 -binary "$TMP/$name/$tgz" | base64 -w0)"
  if [ "$got" != "$sha" ]; then
    echo "vendor: integrity mismatch for $spec: expected $sha, got $got" >&2; exit 1
  fi
  tar -xzf "$TMP/$name/$tgz" -C "$TMP/$name"
  echo "$TMP/$name/package"
}

echo "vendor: fetching $WANT from $(npm config get registry)"
R=$(fetch "$REQUIREJS" "$REQUIREJS_SHA")
H=$(fetch "$HTMLMANAGER" "$HTMLMANAGER_SHA")
M=$(fetch "$MATHJAX" "$MATHJAX_SHA")

# Sanity: embed-amd.js must bundle the widget modules; otherwise it would fetch them from a CDN at view time.
for mod in base controls output; do
  grep -q "@jupyter-widgets/$mod" "$H/dist/embed-amd.js" || { echo "vendor: embed-amd.js lacks @jupyter-widgets/$mod" >&2; exit 1; }
done
grep -q 'define("@jupyter-widgets/controls"' "$H/dist/embed-amd.js" || { echo "vendor: embed-amd.js does not define @jupyter-widgets/controls" >&2; exit 1; }

NEW="$TMP/vendor"
mkdir -p "$NEW/html-manager" "$NEW/mathjax/input/tex" "$NEW/mathjax/output/chtml/fonts"
cp "$R/require.js" "$NEW/require.js"
cp "$R/package.json" "$NEW/require.package.json"
# embed-amd.js loads its fonts (Font Awesome) from its own folder (webpack publicPath "auto").
cp "$H/dist/embed-amd.js" "$H/package.json" "$NEW/html-manager/"
cp "$H"/dist/*.woff "$H"/dist/*.woff2 "$H"/dist/*.ttf "$H"/dist/*.eot "$H"/dist/*.svg "$NEW/html-manager/"
cp "$M/es5/tex-chtml.js" "$M/package.json" "$M/LICENSE" "$NEW/mathjax/"
cp -r "$M/es5/input/tex/extensions" "$NEW/mathjax/input/tex/"
cp -r "$M/es5/output/chtml/fonts/woff-v2" "$NEW/mathjax/output/chtml/fonts/"
cp -r "$M/es5/a11y" "$M/es5/ui" "$M/es5/sre" "$NEW/mathjax/"
echo "$WANT" > "$NEW/.versions"

mkdir -p "$(dirname "$DEST")"
rm -rf "$DEST"
mv "$NEW" "$DEST"
echo "vendor: wrote $DEST ($(du -sh "$DEST" | cut -f1))"
