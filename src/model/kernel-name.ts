/** A catalog kernel's name: lowercase letters, digits, dots and dashes (generic-6.12), no `..` (it names a directory). */
export const KERNEL_NAME_RE = /^[a-z0-9](?:[a-z0-9-]|\.(?!\.)){0,62}$/;
