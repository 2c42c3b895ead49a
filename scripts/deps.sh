#!/usr/bin/env bash
# Installs the Debian packages edgeseg's build, demo and tests need, when missing.
#   scripts/deps.sh
set -euo pipefail
need=()
command -v cmake >/dev/null || need+=(cmake)            # builds CharLS (JPEG-LS decoder)
command -v dcmcjpeg >/dev/null || need+=(dcmtk)          # fixture compression, dcmdump
command -v dciodvfy >/dev/null || need+=(dicom3tools)    # DICOM validator
command -v dcm2niix >/dev/null || need+=(dcm2niix)        # conformance peer (tools/conformance.py)
[ -x /usr/bin/time ] || need+=(time)                     # peak-memory figures
command -v promtool >/dev/null || need+=(prometheus)   # promtool check metrics
command -v dbus-daemon >/dev/null || need+=(dbus)       # private bus for the D-Bus tests
command -v chromium >/dev/null || need+=(chromium)       # headless browser of the status page test
command -v gdbus >/dev/null || need+=(libglib2.0-bin)  # gdbus, the second D-Bus client of the tests
command -v plastimatch >/dev/null || need+=(plastimatch) # RTSTRUCT peer
command -v Orthanc >/dev/null || need+=(orthanc)         # PACS peer of the DICOM node tests
[ -e /usr/share/orthanc/plugins/libOrthancDicomWeb.so ] || need+=(orthanc-dicomweb) # STOW-RS peer
command -v socat >/dev/null || need+=(socat)             # TLS (OpenSSL) in front of Orthanc: STOW-RS over https
command -v openssl >/dev/null || need+=(openssl)         # the HTTPS test's throwaway CA and certificates
command -v dcm2niix >/dev/null || need+=(dcm2niix)     # geometry peer (tilt, variable spacing)
command -v systemd-analyze >/dev/null || need+=(systemd) # unit verify/security
command -v mkosi >/dev/null || need+=(mkosi)             # image recipe check (mkosi summary)
command -v debootstrap >/dev/null || need+=(debootstrap) # package test's Debian root (scripts/debian-root.sh)
command -v dpkg-shlibdeps >/dev/null || need+=(dpkg-dev) # cargo deb's $auto dependencies
python3 -c 'import venv, ensurepip' 2>/dev/null || need+=(python3-venv)
if [ ${#need[@]} -gt 0 ]; then
    echo "deps: installing ${need[*]}" >&2
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi
