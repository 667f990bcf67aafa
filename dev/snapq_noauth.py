"""Dev-only paste filter: gives requests that carry no identity the roles Keystone would.

Glance's new RBAC defaults reject every write from an unauthenticated context. In the dev
setup there is no Keystone, so requests without an X-Auth-Token are marked as confirmed with
the configured roles before Glance's ContextMiddleware builds the request context.
"""


def filter_factory(global_conf, **local_conf):
    roles = local_conf.get("roles", "admin,member,reader,service")
    project = local_conf.get("project_id", "snapq-dev-project")
    user = local_conf.get("user_id", "snapq-dev-user")

    def make_filter(app):
        def middleware(environ, start_response):
            if "HTTP_X_AUTH_TOKEN" not in environ:
                environ["HTTP_X_IDENTITY_STATUS"] = "Confirmed"
                environ["HTTP_X_ROLES"] = roles
                environ["HTTP_X_SERVICE_ROLES"] = roles
                environ["HTTP_X_PROJECT_ID"] = project
                environ["HTTP_X_TENANT_ID"] = project
                environ["HTTP_X_USER_ID"] = user
            return app(environ, start_response)

        return middleware

    return make_filter
