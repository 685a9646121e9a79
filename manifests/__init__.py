"""Protocol definitions shipped with epam: split rules and class names per dataset, as data files.

Installed as the package `epam_manifests` so the files travel inside the wheel; read them with
`epam_data.protocols`, not directly.
"""
