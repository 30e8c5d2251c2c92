// SPDX-License-Identifier: GPL-2.0
/*
 * virtio_mmio_cmdline: registers virtio-mmio platform devices from "device=" parameters.
 *
 * Why: Debian's linux-image-cloud-amd64 is built with CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES unset, so
 * its virtio_mmio module ignores the usual `virtio_mmio.device=<size>@<base>:<irq>[:<id>]` kernel
 * parameter and only finds devices through ACPI (HID LNRO0005) or a device tree. The appliance's
 * init reads those parameters from /proc/cmdline and passes them here, so a VMM without ACPI
 * tables (and QEMU's microvm with acpi=off) can announce its devices exactly as it would to a
 * kernel built with that option. The parsing mirrors vm_cmdline_set() in
 * drivers/virtio/virtio_mmio.c of Linux 6.1.
 *
 * Usage: insmod virtio_mmio_cmdline.ko device=4K@0xd0000000:5,4K@0xd0001000:6
 */
#include <linux/init.h>
#include <linux/ioport.h>
#include <linux/kernel.h>
#include <linux/module.h>
#include <linux/moduleparam.h>
#include <linux/platform_device.h>

/* At most this many devices per load; a VMM announces one per virtio device. */
#define MAX_DEVICES 16

static char *device[MAX_DEVICES];
static int device_count;
module_param_array(device, charp, &device_count, 0444);
MODULE_PARM_DESC(device, "virtio-mmio device <size>@<baseaddr>:<irq>[:<id>], comma separated");

static struct platform_device *registered[MAX_DEVICES];
static int registered_count;
/* Platform device ids when the parameter names none, as the in-kernel parser does. */
static unsigned int next_id;

static int register_one(const char *spec)
{
	struct resource resources[2] = {};
	struct platform_device *pdev;
	unsigned long long base;
	unsigned int irq, id;
	long long size;
	char *str = (char *)spec;
	int consumed = 0, processed;

	size = memparse(str, &str);
	processed = sscanf(str, "@%lli:%u%n:%d%n", &base, &irq, &consumed, &id, &consumed);
	if (size <= 0 || processed < 2 || str[consumed] != '\0') {
		pr_err("virtio_mmio_cmdline: cannot parse '%s' (want <size>@<base>:<irq>[:<id>])\n", spec);
		return -EINVAL;
	}
	if (processed < 3)
		id = next_id;
	next_id = id + 1;

	resources[0].flags = IORESOURCE_MEM;
	resources[0].start = base;
	resources[0].end = base + size - 1;
	resources[1].flags = IORESOURCE_IRQ;
	resources[1].start = resources[1].end = irq;

	pdev = platform_device_register_resndata(NULL, "virtio-mmio", id, resources,
						 ARRAY_SIZE(resources), NULL, 0);
	if (IS_ERR(pdev)) {
		pr_err("virtio_mmio_cmdline: registering '%s' failed: %ld\n", spec, PTR_ERR(pdev));
		return PTR_ERR(pdev);
	}
	pr_info("virtio_mmio_cmdline: device %u: %pR irq %u\n", id, &resources[0], irq);
	registered[registered_count++] = pdev;
	return 0;
}

static void unregister_all(void)
{
	while (registered_count > 0)
		platform_device_unregister(registered[--registered_count]);
}

static int __init virtio_mmio_cmdline_init(void)
{
	int i, err;

	for (i = 0; i < device_count; i++) {
		err = register_one(device[i]);
		if (err) {
			unregister_all();
			return err;
		}
	}
	return 0;
}

static void __exit virtio_mmio_cmdline_exit(void)
{
	unregister_all();
}

module_init(virtio_mmio_cmdline_init);
module_exit(virtio_mmio_cmdline_exit);
MODULE_DESCRIPTION("virtio-mmio devices from module parameters (for kernels without CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES)");
MODULE_LICENSE("GPL");
