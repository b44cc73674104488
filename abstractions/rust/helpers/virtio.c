// SPDX-License-Identifier: GPL-2.0

#include <linux/irqflags.h>
#include <linux/mm.h>
#include <linux/scatterlist.h>
#include <linux/virtio.h>
#include <linux/virtio_config.h>

__rust_helper bool rust_helper___virtio_test_bit(const struct virtio_device *vdev,
						 unsigned int fbit)
{
	return __virtio_test_bit(vdev, fbit);
}

__rust_helper int rust_helper_virtio_find_vqs(struct virtio_device *vdev,
					      unsigned int nvqs,
					      struct virtqueue *vqs[],
					      struct virtqueue_info vqs_info[],
					      struct irq_affinity *desc)
{
	return virtio_find_vqs(vdev, nvqs, vqs, vqs_info, desc);
}

__rust_helper void rust_helper_virtio_device_ready(struct virtio_device *dev)
{
	virtio_device_ready(dev);
}

__rust_helper void rust_helper_virtio_synchronize_cbs(struct virtio_device *dev)
{
	virtio_synchronize_cbs(dev);
}

__rust_helper void rust_helper_virtio_cread_bytes(struct virtio_device *vdev,
						  unsigned int offset,
						  void *buf, size_t len)
{
	virtio_cread_bytes(vdev, offset, buf, len);
}

__rust_helper bool rust_helper_irqs_disabled(void)
{
	return irqs_disabled();
}

__rust_helper bool rust_helper_virt_addr_valid(const void *addr)
{
	return virt_addr_valid(addr);
}

__rust_helper struct page *rust_helper_virt_to_page(const void *addr)
{
	return virt_to_page(addr);
}

__rust_helper void rust_helper_sg_set_page(struct scatterlist *sg,
					   struct page *page, unsigned int len,
					   unsigned int offset)
{
	sg_set_page(sg, page, len, offset);
}

__rust_helper struct page *rust_helper_sg_page(struct scatterlist *sg)
{
	return sg_page(sg);
}
