"""Where results live: the artifact cache, identity digests, processes and devices. Imports core."""
