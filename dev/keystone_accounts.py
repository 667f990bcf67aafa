"""Makes the dev Keystone's accounts, idempotently, and writes their ids to $OUT.

- project `service`: user `snapq` (roles admin and service: snapq acts on every project's
  images, and the location API wants the service role), user `glance` (service, for
  keystonemiddleware), and an application credential `snapq-dev` of snapq's;
- project `demo`: user `demo` (member), whose images snapq snapshots;
- the `image` service with public/internal/admin endpoints at $GLANCE_URL.

Run by dev/keystone.sh with Glance's venv (requests is there). Passwords come from the
environment and are written only to $OUT (mode 600, dev state).
"""
import json
import os
import sys

import requests

KS = os.environ["KEYSTONE_URL"].rstrip("/")
DOMAIN = {"id": "default"}


def token(user, password, project):
    body = {"auth": {
        "identity": {"methods": ["password"], "password": {
            "user": {"name": user, "domain": DOMAIN, "password": password}}},
        "scope": {"project": {"name": project, "domain": DOMAIN}}}}
    r = requests.post(f"{KS}/auth/tokens", json=body, timeout=30)
    r.raise_for_status()
    return r.headers["X-Subject-Token"], r.json()["token"]


ADMIN, _ = token("admin", os.environ["ADMIN_PASSWORD"], "admin")
H = {"X-Auth-Token": ADMIN}


def get(path, **params):
    r = requests.get(f"{KS}{path}", headers=H, params=params, timeout=30)
    r.raise_for_status()
    return r.json()


def post(path, body, headers=H):
    r = requests.post(f"{KS}{path}", headers=headers, json=body, timeout=30)
    r.raise_for_status()
    return r.json() if r.content else {}


def ensure(kind, name, body, **filters):
    found = get(f"/{kind}", name=name, **filters)[kind]
    if found:
        return found[0]
    singular = kind[:-1]
    return post(f"/{kind}", {singular: dict(body, name=name)})[singular]


def ensure_user(name, password, project):
    user = ensure("users", name, {"domain_id": "default", "password": password,
                                  "default_project_id": project["id"]})
    r = requests.patch(f"{KS}/users/{user['id']}", headers=H, timeout=30,
                       json={"user": {"password": password}})
    r.raise_for_status()
    return user


def grant(user, project, role_name):
    role = get("/roles", name=role_name)["roles"][0]
    r = requests.put(f"{KS}/projects/{project['id']}/users/{user['id']}/roles/{role['id']}",
                     headers=H, timeout=30)
    r.raise_for_status()


service = ensure("projects", "service", {"domain_id": "default"})
demo = ensure("projects", "demo", {"domain_id": "default"})
snapq = ensure_user("snapq", os.environ["SNAPQ_PASSWORD"], service)
glance = ensure_user("glance", os.environ["GLANCE_PASSWORD"], service)
demo_user = ensure_user("demo", os.environ["DEMO_PASSWORD"], demo)
for role in ("admin", "service"):
    grant(snapq, service, role)
grant(glance, service, "service")
grant(demo_user, demo, "member")

image = ensure("services", "glance", {"type": "image"})
endpoints = get("/endpoints", service_id=image["id"])["endpoints"]
for interface in ("public", "internal", "admin"):
    url = os.environ["GLANCE_URL"]
    mine = [e for e in endpoints if e["interface"] == interface]
    if mine and mine[0]["url"] == url:
        continue
    for e in mine:
        requests.delete(f"{KS}/endpoints/{e['id']}", headers=H, timeout=30).raise_for_status()
    post("/endpoints", {"endpoint": {"service_id": image["id"], "interface": interface,
                                     "url": url, "region_id": "RegionOne"}})

# An application credential is made with the user's own token; made anew so its secret is
# the configured one.
snapq_token, _ = token("snapq", os.environ["SNAPQ_PASSWORD"], "service")
own = {"X-Auth-Token": snapq_token}
creds = requests.get(f"{KS}/users/{snapq['id']}/application_credentials",
                     headers=own, params={"name": "snapq-dev"}, timeout=30)
creds.raise_for_status()
for c in creds.json()["application_credentials"]:
    requests.delete(f"{KS}/users/{snapq['id']}/application_credentials/{c['id']}",
                    headers=own, timeout=30).raise_for_status()
app_cred = post(f"/users/{snapq['id']}/application_credentials",
                {"application_credential": {"name": "snapq-dev",
                                            "secret": os.environ["APP_CRED_SECRET"]}},
                headers=own)["application_credential"]

values = {
    "SNAPQ_KEYSTONE_AUTH_URL": KS,
    "SNAPQ_KEYSTONE_GLANCE_URL": os.environ["GLANCE_URL"],
    "SNAPQ_KEYSTONE_SERVICE_PROJECT_ID": service["id"],
    "SNAPQ_KEYSTONE_DEMO_PROJECT_ID": demo["id"],
    "SNAPQ_KEYSTONE_APP_CRED_ID": app_cred["id"],
}
fd = os.open(os.environ["OUT"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
with os.fdopen(fd, "w") as out:
    for k, v in values.items():
        out.write(f"export {k}={v}\n")
print(json.dumps(values), file=sys.stderr)
