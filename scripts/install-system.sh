#!/usr/bin/env bash
# Debian packages voxlm needs: TTS engines (espeak-ng, flite; festival is the held-out engine),
# sox, libsndfile, baseline codecs (codec2, opus-tools, speex), real speech (Asterisk prompts) and
# chromium, the browser tests/test_browser.py drives (Playwright's own browser download is not used).
# Idempotent: installs only what is missing. Run as root or with sudo.
set -euo pipefail
PACKAGES=(espeak-ng libespeak-ng1 flite sox libsox-fmt-all libsndfile1 ffmpeg codec2 opus-tools speex
          festival festvox-kallpc16k festvox-us-slt-hts
          asterisk-core-sounds-en-wav asterisk-core-sounds-en chromium)
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "system packages: all present"
  exit 0
fi
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
echo "system packages: installing ${missing[*]}"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
