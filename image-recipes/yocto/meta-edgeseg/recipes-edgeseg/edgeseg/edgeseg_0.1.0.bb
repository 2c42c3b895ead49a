SUMMARY = "Scanner-side PET/CT and CT segmentation daemon"
DESCRIPTION = "Watches a DICOM export folder, segments each study with an nnU-Net \
ensemble through ONNX Runtime (TensorRT on Jetson), writes NIfTI, DICOM SEG, \
RTSTRUCT and a report, and reports to Prometheus, systemd and D-Bus."
HOMEPAGE = "https://example.org/edgeseg"
LICENSE = "Apache-2.0"
LIC_FILES_CHKSUM = "file://${COMMON_LICENSE_DIR}/Apache-2.0;md5=89aea4e17d99a7cacdbeed46a0096b10"

# Set EDGESEG_GIT_URI and EDGESEG_SRCREV (a commit) in local.conf or a bbappend.
EDGESEG_GIT_URI ?= "git://git.example.org/edgeseg.git;protocol=https;branch=main"
EDGESEG_SRCREV ?= "${AUTOREV}"
SRC_URI = "${EDGESEG_GIT_URI}"
SRCREV = "${EDGESEG_SRCREV}"
PV = "0.1.0+git"
S = "${WORKDIR}/git"

inherit cargo cargo-update-recipe-crates pkgconfig systemd useradd

# The crate:// entries of every dependency: run `bitbake -c update_crates edgeseg`
# once (writes edgeseg-crates.inc beside this recipe) and commit the result.
include ${BPN}-crates.inc

# CUDA post-processing kernels and the CUDA and TensorRT providers of ONNX
# Runtime (oe-core's cargo class has no features variable of its own).
EDGESEG_CARGO_FEATURES ?= "tensorrt"
CARGO_BUILD_FLAGS:append = " --features ${EDGESEG_CARGO_FEATURES}"

# Build time: libsystemd (sd_notify, journald) and cmake for CharLS (JPEG-LS).
# ONNX Runtime, CUDA and TensorRT are opened at run time (ort load-dynamic,
# cudarc dynamic-loading, NVRTC), so they are runtime dependencies only.
DEPENDS += "systemd cmake-native"
RDEPENDS:${PN} += " \
    onnxruntime \
    tensorrt-core \
    tensorrt-plugins \
    cudnn \
    cuda-cudart \
    cuda-nvrtc \
    libcublas \
    dbus \
"
COMPATIBLE_MACHINE = "(cuda)"
REQUIRED_DISTRO_FEATURES = "systemd"

USERADD_PACKAGES = "${PN}"
# edgeseg: results and D-Bus reading; edgeseg-admin: D-Bus control (sysusers does the same).
GROUPADD_PARAM:${PN} = "--system edgeseg; --system edgeseg-admin"
USERADD_PARAM:${PN} = "--system --gid edgeseg --groups video --home-dir /var/lib/edgeseg --no-create-home --shell /sbin/nologin edgeseg"

SYSTEMD_PACKAGES = "${PN}"
SYSTEMD_SERVICE:${PN} = "edgeseg.service"
SYSTEMD_AUTO_ENABLE:${PN} = "enable"

do_install:append() {
    install -d ${D}${systemd_system_unitdir} ${D}${nonarch_libdir}/sysusers.d ${D}${nonarch_libdir}/tmpfiles.d
    install -m 0644 ${S}/systemd/edgeseg.service ${D}${systemd_system_unitdir}/edgeseg.service
    install -m 0644 ${S}/systemd/edgeseg.sysusers ${D}${nonarch_libdir}/sysusers.d/edgeseg.conf
    install -m 0644 ${S}/systemd/edgeseg.tmpfiles ${D}${nonarch_libdir}/tmpfiles.d/edgeseg.conf
    install -d ${D}${datadir}/dbus-1/system.d
    install -m 0644 ${S}/systemd/org.edgeseg.Daemon1.conf ${D}${datadir}/dbus-1/system.d/org.edgeseg.Daemon1.conf
    install -d ${D}${sysconfdir}/edgeseg
    install -m 0640 -g edgeseg ${S}/systemd/edgeseg.toml ${D}${sysconfdir}/edgeseg/edgeseg.toml
    # The configuration's default names /usr/lib/edgeseg/libonnxruntime.so:
    # point it at meta-tegra-community's onnxruntime (TensorRT and CUDA providers).
    install -d ${D}${nonarch_libdir}/edgeseg
    ln -sf ${libdir}/libonnxruntime.so ${D}${nonarch_libdir}/edgeseg/libonnxruntime.so
    install -d ${D}${datadir}/edgeseg/models/demo-petct
    install -m 0644 ${S}/monitoring/grafana-dashboard.json ${S}/monitoring/edgeseg-alerts.yml ${D}${datadir}/edgeseg/
    install -m 0644 ${S}/models/demo-petct/* ${D}${datadir}/edgeseg/models/demo-petct/
}

CONFFILES:${PN} = "${sysconfdir}/edgeseg/edgeseg.toml"
FILES:${PN} += " \
    ${systemd_system_unitdir}/edgeseg.service \
    ${nonarch_libdir}/sysusers.d/edgeseg.conf \
    ${nonarch_libdir}/tmpfiles.d/edgeseg.conf \
    ${nonarch_libdir}/edgeseg \
    ${datadir}/dbus-1/system.d/org.edgeseg.Daemon1.conf \
    ${datadir}/edgeseg \
"
# The libonnxruntime.so symlink is the runtime library, not a -dev link.
INSANE_SKIP:${PN} += "dev-so"
