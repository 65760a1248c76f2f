#include "methods.h"

#include <string.h>

static const struct gw_method_table *const tables[] = {
    &gw_kv_table,    &gw_lease_table,     &gw_cluster_table, &gw_maint_table,
    &gw_watch_table, &gw_keepalive_table, &gw_auth_table,
};

static bool same(const char *name, const char *s, size_t len)
{
    return name && strlen(name) == len && memcmp(name, s, len) == 0;
}

const struct gw_method *gw_method_by_grpc_path(const char *path, size_t len)
{
    for (size_t t = 0; t < sizeof(tables) / sizeof(tables[0]); t++)
        for (size_t i = 0; i < tables[t]->n; i++)
            if (same(tables[t]->methods[i].grpc_path, path, len))
                return &tables[t]->methods[i];
    return NULL;
}

const struct gw_method *gw_method_by_json_path(const char *path, size_t len)
{
    for (size_t t = 0; t < sizeof(tables) / sizeof(tables[0]); t++)
        for (size_t i = 0; i < tables[t]->n; i++)
            if (same(tables[t]->methods[i].json_path, path, len))
                return &tables[t]->methods[i];
    return NULL;
}

const struct gw_method *gw_method_at(size_t i)
{
    for (size_t t = 0; t < sizeof(tables) / sizeof(tables[0]); t++) {
        if (i < tables[t]->n)
            return &tables[t]->methods[i];
        i -= tables[t]->n;
    }
    return NULL;
}

size_t gw_method_count(void)
{
    size_t n = 0;
    for (size_t t = 0; t < sizeof(tables) / sizeof(tables[0]); t++)
        n += tables[t]->n;
    return n;
}
