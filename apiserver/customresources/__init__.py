"""CustomResourceDefinitions (`apiextensions.k8s.io/v1`) and the custom resources they define.

The pure cores: `schema` (is a schema structural; validate, prune and default an object by it),
`definitions` (validate a CRD; the kinds, names and conditions it makes), `columns` (the printer columns
of additionalPrinterColumns, JSONPath cells) and `documents` (the OpenAPI v3 document of a custom group
version). The adapters: `registry` (the CRDs in force, followed from storage, and the controllers
kube-apiserver runs for them: names, establishing, cleanup on deletion) and `routes` (the REST paths and
discovery of the custom resources, served by the same handlers as every built-in kind).
"""
