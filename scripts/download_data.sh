#!/usr/bin/env bash
# Download MNIST, CIFAR-10 (binary version) and tinyshakespeare from their
# canonical sources, verifying SHA-256 checksums, for tamer's examples:
#
#   scripts/download_data.sh --dir datasets
#   cargo run --release --example train_vit -- --dataset mnist   --data-dir datasets/mnist
#   cargo run --release --example train_vit -- --dataset cifar10 --data-dir datasets
#   cargo run --release --example train_gpt -- --text datasets/tinyshakespeare.txt
#
# Layout under DIR:
#   mnist/{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz
#   cifar-10-binary.tar.gz, extracted to cifar-10-batches-bin/
#   tinyshakespeare.txt
#
# Checksums (SHA-256 of the downloaded file):
#   MNIST: the four .gz files as served by LeCun's page and its mirrors (the
#     values torchvision, TensorFlow and others pin). A .gz file also passes
#     if its *decompressed* content has the listed content SHA-256, so a
#     re-compressed copy of the same data (other gzip timestamp) is accepted.
#   CIFAR-10: the authors publish only the MD5 (c32a1d4ab5d03f1284b67883e8d87530,
#     https://www.cs.toronto.edu/~kriz/cifar.html); both it and the archive's
#     SHA-256 (170,052,171 bytes, as recorded by third parties; not published by
#     the authors) are checked. The extracted .bin files are checked by size.
#   tinyshakespeare: karpathy/char-rnn's data/tinyshakespeare/input.txt
#     (1,115,394 bytes), the nanoGPT corpus.
#
# --verify-only checks what is already in DIR without any network access and
# exits non-zero if a file is missing or does not match.

set -euo pipefail

usage() {
    cat <<'EOF'
usage: scripts/download_data.sh [--dir DIR] [--only LIST] [--verify-only] [--help]

  --dir DIR       where to put the data (default: datasets)
  --only LIST     comma-separated subset of: mnist, cifar10, shakespeare (default: all)
  --verify-only   do not download; verify the files already in DIR (exit 1 on any problem)
  -h, --help      this text
EOF
}

DIR=datasets
ONLY=mnist,cifar10,shakespeare
VERIFY_ONLY=0

while [[ $# -gt 0 ]]; do
    case "$1" in
        --dir)
            [[ $# -ge 2 && -n "$2" ]] || { echo "error: --dir needs a directory" >&2; usage >&2; exit 2; }
            DIR=$2; shift 2 ;;
        --dir=*) DIR=${1#--dir=}; shift ;;
        --only)
            [[ $# -ge 2 && -n "$2" ]] || { echo "error: --only needs a list" >&2; usage >&2; exit 2; }
            ONLY=$2; shift 2 ;;
        --only=*) ONLY=${1#--only=}; shift ;;
        --verify-only) VERIFY_ONLY=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "error: unknown argument '$1'" >&2; usage >&2; exit 2 ;;
    esac
done

WANT_MNIST=0 WANT_CIFAR=0 WANT_TEXT=0
IFS=',' read -r -a items <<< "$ONLY"
[[ ${#items[@]} -gt 0 ]] || { echo "error: --only is empty" >&2; exit 2; }
for item in "${items[@]}"; do
    case "$item" in
        mnist) WANT_MNIST=1 ;;
        cifar10|cifar) WANT_CIFAR=1 ;;
        shakespeare|tinyshakespeare) WANT_TEXT=1 ;;
        *) echo "error: unknown data set '$item' in --only (expected mnist, cifar10, shakespeare)" >&2; exit 2 ;;
    esac
done

sha256_of() {
    if command -v sha256sum >/dev/null 2>&1; then sha256sum | cut -d' ' -f1
    elif command -v shasum >/dev/null 2>&1; then shasum -a 256 | cut -d' ' -f1
    else echo "error: need sha256sum or shasum" >&2; exit 3
    fi
}
md5_of() {
    if command -v md5sum >/dev/null 2>&1; then md5sum | cut -d' ' -f1
    elif command -v md5 >/dev/null 2>&1; then md5 -q
    else echo "none"
    fi
}

# verify FILE SHA256 [CONTENT_SHA256 [MD5]]: 0 if FILE matches, 1 otherwise (with a message).
verify() {
    local file=$1 want=$2 content=${3:-} md5=${4:-}
    if [[ ! -f "$file" ]]; then
        echo "missing   $file"
        return 1
    fi
    local got
    got=$(sha256_of < "$file")
    if [[ "$got" == "$want" ]]; then
        if [[ -n "$md5" ]]; then
            local m
            m=$(md5_of < "$file")
            if [[ "$m" != "none" && "$m" != "$md5" ]]; then
                echo "MISMATCH  $file: md5 $m, expected $md5"
                return 1
            fi
        fi
        echo "ok        $file"
        return 0
    fi
    if [[ -n "$content" ]] && gzip -t "$file" 2>/dev/null; then
        local inner
        inner=$(gzip -dc "$file" | sha256_of)
        if [[ "$inner" == "$content" ]]; then
            echo "ok        $file (re-compressed copy; content sha256 matches)"
            return 0
        fi
    fi
    echo "MISMATCH  $file: sha256 $got, expected $want"
    return 1
}

# fetch DEST URL...: download to DEST.part from the first URL that works, then move into place.
fetch() {
    local dest=$1; shift
    mkdir -p "$(dirname "$dest")"
    local url
    for url in "$@"; do
        echo "fetching  $url"
        if command -v curl >/dev/null 2>&1; then
            curl -fL --retry 3 -o "$dest.part" "$url" && { mv "$dest.part" "$dest"; return 0; }
        elif command -v wget >/dev/null 2>&1; then
            wget -q -O "$dest.part" "$url" && { mv "$dest.part" "$dest"; return 0; }
        else
            echo "error: need curl or wget" >&2; exit 3
        fi
        rm -f "$dest.part"
    done
    echo "error: could not download $(basename "$dest") from any source" >&2
    return 1
}

FAILED=0

# get FILE SHA256 CONTENT_SHA256 MD5 URL...: keep a verified file, else download and verify.
get() {
    local file=$1 sha=$2 content=$3 md5=$4; shift 4
    if [[ $VERIFY_ONLY -eq 1 ]]; then
        verify "$file" "$sha" "$content" "$md5" || FAILED=1
        return 0
    fi
    if [[ -f "$file" ]] && verify "$file" "$sha" "$content" "$md5" >/dev/null; then
        echo "present   $file"
        return 0
    fi
    if fetch "$file" "$@" && verify "$file" "$sha" "$content" "$md5"; then
        return 0
    fi
    FAILED=1
}

if [[ $WANT_MNIST -eq 1 ]]; then
    # name  sha256(.gz)  sha256(decompressed)
    while read -r name sha content; do
        get "$DIR/mnist/$name" "$sha" "$content" "" \
            "https://yann.lecun.com/exdb/mnist/$name" \
            "https://ossci-datasets.s3.amazonaws.com/mnist/$name" \
            "https://storage.googleapis.com/cvdf-datasets/mnist/$name"
    done <<'EOF'
train-images-idx3-ubyte.gz 440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609 ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db
train-labels-idx1-ubyte.gz 3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c 65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5
t10k-images-idx3-ubyte.gz 8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6 0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7
t10k-labels-idx1-ubyte.gz f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6 ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2
EOF
fi

if [[ $WANT_CIFAR -eq 1 ]]; then
    archive="$DIR/cifar-10-binary.tar.gz"
    batches="$DIR/cifar-10-batches-bin"
    if [[ $VERIFY_ONLY -eq 1 && ! -f "$archive" && -d "$batches" ]]; then
        echo "note      $archive absent; checking the extracted files' sizes only"
    else
        get "$archive" c4a38c50a1bc5f3a1c5537f2155ab9d68f9f25eb1ed8d9ddda3db29a59bca1dd "" c32a1d4ab5d03f1284b67883e8d87530 \
            "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"
    fi
    # check_batches [quiet]: each extracted batch is 10,000 records of 3,073 bytes.
    check_batches() {
        local f size bad=0
        for f in data_batch_1.bin data_batch_2.bin data_batch_3.bin data_batch_4.bin data_batch_5.bin test_batch.bin; do
            if [[ ! -f "$batches/$f" ]]; then
                [[ -n "${1:-}" ]] || echo "missing   $batches/$f"
                bad=1
                continue
            fi
            size=$(wc -c < "$batches/$f")
            size=${size//[[:space:]]/}
            if [[ "$size" == 30730000 ]]; then
                [[ -n "${1:-}" ]] || echo "ok        $batches/$f (size)"
            else
                [[ -n "${1:-}" ]] || echo "MISMATCH  $batches/$f: $size bytes, expected 30730000"
                bad=1
            fi
        done
        return $bad
    }
    if [[ $VERIFY_ONLY -eq 0 && -f "$archive" && $FAILED -eq 0 ]] && ! check_batches quiet; then
        tar -xzf "$archive" -C "$DIR"
    fi
    if [[ -d "$batches" || $VERIFY_ONLY -eq 0 ]]; then
        check_batches || FAILED=1
    fi
fi

if [[ $WANT_TEXT -eq 1 ]]; then
    get "$DIR/tinyshakespeare.txt" 86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed "" "" \
        "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
fi

if [[ $FAILED -ne 0 ]]; then
    echo "some files are missing or do not match (see above)" >&2
    exit 1
fi
echo "all requested data verified in $DIR"
