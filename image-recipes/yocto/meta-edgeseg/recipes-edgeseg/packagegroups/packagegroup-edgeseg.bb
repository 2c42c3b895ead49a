SUMMARY = "edgeseg appliance: the daemon, its GPU runtime and the tools an engineer uses on the box"
LICENSE = "MIT"

inherit packagegroup

RDEPENDS:${PN} = " \
    edgeseg \
    curl \
    tegra-tools-jetson-clocks \
"
