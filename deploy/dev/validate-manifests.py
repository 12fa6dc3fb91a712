"""Offline checks of deploy/k8s and deploy/compose (run by validate-manifests).

Kubernetes core resources are checked by kubernetes-validate against the
schemas it bundles, strictly (an unknown field fails); custom resources
against the operators' CRD schemas vendored in deploy/k8s/schemas/, made
strict the way the API server prunes (an object with listed properties and
no x-kubernetes-preserve-unknown-fields takes no others); compose.yaml
against the Compose Specification's schema in deploy/compose/. Then a few
cross-references that no schema sees. One line per file; exit 1 on any
failure.
"""

import argparse
import copy
import json
import os
import re
import sys

import jsonschema
import kubernetes_validate
import kubernetes_validate.utils
import yaml

# The custom resources and where their schemas are (deploy/k8s/schemas/README.md).
CRDS = {
    ("rabbitmq.com/v1beta1", "RabbitmqCluster"): "rabbitmq.com/rabbitmqcluster-v1beta1.json",
    ("postgresql.cnpg.io/v1", "Cluster"): "postgresql.cnpg.io/cluster-v1.json",
    ("keda.sh/v1alpha1", "ScaledObject"): "keda.sh/scaledobject-v1alpha1.json",
    ("keda.sh/v1alpha1", "TriggerAuthentication"): "keda.sh/triggerauthentication-v1alpha1.json",
}

# What the fallback reader of kustomization.yaml understands; anything else
# would be silently skipped by it, so it is refused.
KUSTOMIZATION_KEYS = {"apiVersion", "kind", "namespace", "labels", "resources", "images"}

# Secrets that exist in a cluster without being in deploy/k8s: made by the
# operators, or by cert-manager (see the comments in the manifests).
EXTERNAL_SECRETS = {"netra-rabbitmq-tls", "netra-rabbitmq-default-user", "netra-pg-app", "netra-pg-ca"}

MAX_ERRORS = 10


class UniqueKeyLoader(yaml.SafeLoader):
    """A SafeLoader that refuses a key given twice in one mapping."""


def _mapping(loader, node, deep=False):
    seen = set()
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue  # `<<: *anchor`: its keys may be overridden here
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark)
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)


def load_all(path):
    with open(path, encoding="utf-8") as f:
        return [d for d in yaml.load_all(f, Loader=UniqueKeyLoader) if d is not None]


def strict(schema):
    """The CRD schema as the API server applies it: unknown fields fail."""
    schema = copy.deepcopy(schema)

    def walk(node):
        if isinstance(node, dict):
            if ("properties" in node and "additionalProperties" not in node
                    and not node.get("x-kubernetes-preserve-unknown-fields")):
                node["additionalProperties"] = False
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(schema)
    return schema


def path_of(error):
    return ".".join(str(p) for p in error.absolute_path) or "(top)"


def explain(error):
    """"path: message" of the error, or of the deepest one of an anyOf/oneOf."""
    while error.context:
        error = max(error.context, key=lambda e: len(e.absolute_path))
    return f"{path_of(error)}: {error.message}"


class Checker:
    def __init__(self, schemas_dir, k8s_version):
        self.k8s_version = k8s_version
        self.crd_validators = {}
        for key, rel in CRDS.items():
            with open(os.path.join(schemas_dir, rel), encoding="utf-8") as f:
                schema = strict(json.load(f))
            cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft7Validator)
            cls.check_schema(schema)
            self.crd_validators[key] = cls(schema)

    def resource(self, doc):
        """Errors of one Kubernetes document (a list of strings)."""
        if not isinstance(doc, dict):
            return ["a document that is not a mapping"]
        api, kind = doc.get("apiVersion"), doc.get("kind")
        name = (doc.get("metadata") or {}).get("name")
        if not isinstance(api, str) or not isinstance(kind, str) or not isinstance(name, str):
            return ["a resource needs apiVersion, kind and metadata.name (strings)"]
        validator = self.crd_validators.get((api, kind))
        if validator is not None:
            errors = [explain(e) for e in
                      sorted(validator.iter_errors(doc), key=lambda e: list(map(str, e.absolute_path)))]
            # The CRD schema leaves metadata open; check it as the ObjectMeta it is.
            meta = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": doc["metadata"]}
            errors += self.core(meta)
            return errors
        return self.core(doc)

    def core(self, doc):
        try:
            kubernetes_validate.validate(doc, self.k8s_version, strict=True)
        except kubernetes_validate.ValidationError as e:
            return [f"{path_of(e)}: {e.message}"]
        except kubernetes_validate.SchemaNotFoundError as e:
            return [e.message + " (and no CRD schema is vendored for it in deploy/k8s/schemas)"]
        except kubernetes_validate.utils.VersionNotSupportedError as e:
            return [f"kubernetes-validate cannot check Kubernetes {e.version}"]
        return []


def describe(doc):
    if isinstance(doc, dict):
        return f"{doc.get('kind')}/{(doc.get('metadata') or {}).get('name')}"
    return "?"


def read_kustomization(k8s_dir):
    """The files kustomization.yaml lists, and its errors (ValueError: none can be read)."""
    path = os.path.join(k8s_dir, "kustomization.yaml")
    (doc,) = load_all(path)
    unknown = set(doc) - KUSTOMIZATION_KEYS
    if unknown:
        raise ValueError(f"keys the fallback reader does not apply: {sorted(unknown)} "
                         f"(it knows {sorted(KUSTOMIZATION_KEYS)}; teach it, or use plain files)")
    if doc.get("kind") != "Kustomization":
        raise ValueError("kind is not Kustomization")
    files = []
    for entry in doc.get("resources") or []:
        full = os.path.join(k8s_dir, entry)
        if not isinstance(entry, str) or not entry.endswith(".yaml") or not os.path.isfile(full):
            raise ValueError(f"resource {entry!r} is not a .yaml file in {k8s_dir}")
        files.append(entry)
    present = {f for f in os.listdir(k8s_dir) if f.endswith((".yaml", ".yml"))} - {"kustomization.yaml"}
    missing = sorted(present - set(files))
    errors = [f"not listed in resources (so never applied): {missing}"] if missing else []
    return files, errors


def cross_references(docs):
    """Names that must match between resources: errors as (what, message)."""
    by_kind = {}
    for d in docs:
        by_kind.setdefault(d["kind"], {})[d["metadata"]["name"]] = d
    secrets = set(by_kind.get("Secret", {})) | EXTERNAL_SECRETS
    configmaps = set(by_kind.get("ConfigMap", {}))
    errors = []

    def pod_specs():
        for kind in ("Deployment", "StatefulSet", "Job"):
            for name, d in by_kind.get(kind, {}).items():
                yield f"{kind}/{name}", d["spec"]["template"]["spec"]

    for what, spec in pod_specs():
        for c in spec.get("containers", []) + spec.get("initContainers", []):
            for ref in c.get("envFrom", []):
                if "secretRef" in ref and ref["secretRef"]["name"] not in secrets:
                    errors.append((what, f"envFrom Secret {ref['secretRef']['name']} is not defined"))
                if "configMapRef" in ref and ref["configMapRef"]["name"] not in configmaps:
                    errors.append((what, f"envFrom ConfigMap {ref['configMapRef']['name']} is not defined"))
            for env in c.get("env", []):
                ref = (env.get("valueFrom") or {}).get("secretKeyRef")
                if ref and ref["name"] not in secrets:
                    errors.append((what, f"env {env['name']}: Secret {ref['name']} is not defined"))
        for v in spec.get("volumes", []):
            if "secret" in v and v["secret"]["secretName"] not in secrets:
                errors.append((what, f"volume {v['name']}: Secret {v['secret']['secretName']} is not defined"))
        sa = spec.get("serviceAccountName")
        if sa and sa not in by_kind.get("ServiceAccount", {}):
            errors.append((what, f"ServiceAccount {sa} is not defined"))

    deployments = by_kind.get("Deployment", {})
    namespace = (by_kind.get("ConfigMap", {}).get("netra-config", {}).get("data") or {}).get("NETRA_NAMESPACE", "netra")
    for name, so in by_kind.get("ScaledObject", {}).items():
        what = f"ScaledObject/{name}"
        target = so["spec"]["scaleTargetRef"]["name"]
        dep = deployments.get(target)
        if dep is None:
            errors.append((what, f"scaleTargetRef {target} is not a Deployment here"))
            continue
        args = dep["spec"]["template"]["spec"]["containers"][0].get("args", [])
        phases = args[args.index("--phases") + 1].split(",") if "--phases" in args else []
        queues = {f"{namespace}.phase.{p}" for p in phases}
        if "--no-requests" not in args:
            queues.add(f"{namespace}.requests")
        for t in so["spec"]["triggers"]:
            auth = (t.get("authenticationRef") or {}).get("name")
            if auth and auth not in by_kind.get("TriggerAuthentication", {}):
                errors.append((what, f"authenticationRef {auth} is not defined"))
            queue = t["metadata"].get("queueName")
            if t["type"] == "rabbitmq" and queue not in queues:
                errors.append((what, f"queue {queue} is not one that {target} consumes ({sorted(queues)})"))
        missing = queues - {t["metadata"].get("queueName") for t in so["spec"]["triggers"]}
        if missing:
            errors.append((what, f"no trigger for {sorted(missing)}, which {target} consumes"))
    for name, ta in by_kind.get("TriggerAuthentication", {}).items():
        for ref in ta["spec"].get("secretTargetRef", []):
            if ref["name"] not in secrets:
                errors.append((f"TriggerAuthentication/{name}", f"Secret {ref['name']} is not defined"))
    for name, pdb in by_kind.get("PodDisruptionBudget", {}).items():
        sel = pdb["spec"]["selector"]["matchLabels"]
        if not any(sel.items() <= d["spec"]["template"]["metadata"]["labels"].items()
                   for d in deployments.values()):
            errors.append((f"PodDisruptionBudget/{name}", f"selector {sel} matches no Deployment's pods"))
    for name, svc in by_kind.get("Service", {}).items():
        sel = svc["spec"].get("selector") or {}
        pods = [d["spec"]["template"]["metadata"]["labels"] for k in ("Deployment", "StatefulSet")
                for d in by_kind.get(k, {}).values()]
        if sel and not any(sel.items() <= labels.items() for labels in pods):
            errors.append((f"Service/{name}", f"selector {sel} matches no pods"))
    return errors


def check_compose(path, schema_path):
    with open(schema_path, encoding="utf-8") as f:
        schema = json.load(f)
    jsonschema.Draft7Validator.check_schema(schema)
    (doc,) = load_all(path)
    errors = [explain(e) for e in jsonschema.Draft7Validator(schema).iter_errors(doc)]
    if errors:
        return errors
    services = doc.get("services") or {}
    for name, svc in services.items():
        deps = svc.get("depends_on") or {}
        if isinstance(deps, list):
            deps = {d: {"condition": "service_started"} for d in deps}
        for dep, how in deps.items():
            if dep not in services:
                errors.append(f"services.{name}.depends_on: {dep} is not a service")
            elif how.get("condition") == "service_healthy" and "healthcheck" not in services[dep]:
                errors.append(f"services.{name}.depends_on.{dep}: service_healthy, but {dep} has no healthcheck")
        build = svc.get("build")
        if isinstance(build, dict):
            context = os.path.normpath(os.path.join(os.path.dirname(path), build.get("context", ".")))
            dockerfile = os.path.join(context, build.get("dockerfile", "Dockerfile"))
            if not os.path.isfile(dockerfile):
                errors.append(f"services.{name}.build: no Dockerfile at {dockerfile}")
    return errors


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--k8s-dir", required=True)
    ap.add_argument("--compose", required=True)
    ap.add_argument("--compose-schema", required=True)
    ap.add_argument("--kubernetes-version", required=True)
    ap.add_argument("--kustomize-output", help="the output of `kustomize build`, checked too")
    args = ap.parse_args()

    failed = 0
    checked = 0

    def report(name, errors, detail=""):
        nonlocal failed, checked
        checked += 1
        if errors:
            failed += 1
            print(f"FAIL {name}")
            for e in errors[:MAX_ERRORS]:
                print(f"     {e}")
            if len(errors) > MAX_ERRORS:
                print(f"     … and {len(errors) - MAX_ERRORS} more")
        else:
            print(f"ok   {name}{detail}")

    schemas_dir = os.path.join(args.k8s_dir, "schemas")
    checker = Checker(schemas_dir, args.kubernetes_version)
    for rel in CRDS.values():
        print(f"ok   {os.path.join(schemas_dir, rel)} (a valid JSON schema)")

    try:
        files, errors = read_kustomization(args.k8s_dir)
        report(os.path.join(args.k8s_dir, "kustomization.yaml"), errors, f" ({len(files)} resource files)")
    except (ValueError, yaml.YAMLError) as e:
        report(os.path.join(args.k8s_dir, "kustomization.yaml"), [str(e)])
        files = []

    all_docs = []
    for rel in files:
        path = os.path.join(args.k8s_dir, rel)
        try:
            docs = load_all(path)
        except yaml.YAMLError as e:
            report(path, [f"YAML: {e}"])
            continue
        errors = []
        for d in docs:
            errors += [f"{describe(d)}: {e}" for e in checker.resource(d)]
        all_docs += [d for d in docs if isinstance(d, dict)]
        report(path, errors, f" ({', '.join(describe(d) for d in docs)})")

    if files:
        try:
            errs = [f"{w}: {m}" for w, m in cross_references(all_docs)]
        except (KeyError, TypeError, ValueError, IndexError, AttributeError) as e:
            errs = [f"could not follow the references ({type(e).__name__}: {e}); fix the errors above first"]
        report(f"{args.k8s_dir} cross-references", errs,
               " (Secrets, ConfigMaps, ServiceAccounts, scale targets, queue names, selectors)")

    if args.kustomize_output:
        name = f"kustomize build {args.k8s_dir}"
        try:
            docs = load_all(args.kustomize_output)
            errors = [f"{describe(d)}: {e}" for d in docs for e in checker.resource(d)]
            images = sorted({c["image"] for d in docs if d["kind"] in ("Deployment", "Job")
                             for c in d["spec"]["template"]["spec"]["containers"]})
            report(name, errors, f" ({len(docs)} resources, netra image {', '.join(images)})")
        except yaml.YAMLError as e:
            report(name, [f"YAML: {e}"])

    try:
        report(args.compose, check_compose(args.compose, args.compose_schema),
               f" (Compose Specification schema {args.compose_schema})")
    except (yaml.YAMLError, ValueError) as e:
        report(args.compose, [str(e)])

    print(f"validate-manifests: {checked} checked, {failed} failing")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
