# Ossature's authorization decisions: one per invocation, with a reason.
#
# input: {
#   caller: {subject, kind ("user" | "serviceAccount"), tenant ("" for none),
#            groups: [...], platformOperator: bool},
#   resource, action,         # absent for the permissions query
#   tenant ("" for none),
#   scope ("" for the tenant's root),
# }
# data.catalog: {resource: {level ("tenant" | "scope"), actions: {action: {platformOnly}}}}
# data.tenant, absent when the tenant has no data: {
#   name,
#   scopes: {scope: [the scope, its parent, ..., ""]},
#   detached: {scope: why it has no place in the tree},
#   bindings: {"user:<name>" | "serviceAccount:<name>" | "group:<name>":
#              {scope: [{role, grant, via}]}},
#   roles: {role: {resource: {action: [policy]}}},
# }
package ossature.authz

import rego.v1

kind_words := {"user": "user", "serviceAccount": "service account"}

who := sprintf("%s %s", [kind_words[input.caller.kind], input.caller.subject])

what := sprintf("%s on %s", [input.action, input.resource])

scope_words(s) := "the tenant's root" if s == ""

else := sprintf("scope %s", [s])

# Keys the caller's roles are indexed by: itself and each of its groups.
subject_keys contains sprintf("%s:%s", [input.caller.kind, input.caller.subject])

subject_keys contains sprintf("group:%s", [group]) if some group in input.caller.groups

# Why nothing is allowed here, whatever the grants say. The tenant checks
# read the input alone, so no data can let a caller of one tenant act on
# another.
refusal := "the caller belongs to no tenant" if input.caller.tenant == ""

else := "only platform operators act outside a tenant" if input.tenant == ""

else := sprintf("%s belongs to tenant %s, not to tenant %s: nothing of another tenant is ever allowed", [who, input.caller.tenant, input.tenant]) if {
	input.caller.tenant != input.tenant
}

else := sprintf("tenant %s has no authorization data (it does not exist, or its data is not loaded yet)", [input.tenant]) if {
	not data.tenant.name == input.tenant
}

else := sprintf("%s has no place in tenant %s's tree: %s", [scope_words(input.scope), input.tenant, data.tenant.detached[input.scope]]) if {
	data.tenant.detached[input.scope]
}

else := sprintf("tenant %s has no scope %s", [input.tenant, input.scope]) if {
	input.scope != ""
	not data.tenant.scopes[input.scope]
}

ancestors(s) := [""] if s == ""

else := data.tenant.scopes[s]

# Roles the caller holds in a scope and the scopes above it, closest first:
# [distance, role, scope, grant, via]. Lookups only: the caller's keys in
# the scope's ancestors.
held_in(chain) := {[i, b.role, a, b.grant, b.via] |
	some i, a in chain
	some key in subject_keys
	some b in data.tenant.bindings[key][a]
}

# The closest roles held, at most five of them, so a reason stays short.
roles_words(held) := "it holds no role there" if count(held) == 0

else := sprintf("roles held there: %s%s", [
	concat("; ", [sprintf("%s %s %s (%s)", [h[1], in_scope(h[2]), h[4], h[3]]) | some h in array.slice(sort(held), 0, 5)]),
	more_words(count(held), 5, ";"),
])

# `, and 3 more` after the first `shown` of `n` things.
more_words(n, shown, separator) := "" if n <= shown

else := sprintf("%s and %d more", [separator, n - shown])

in_scope(s) := "at the tenant's root" if s == ""

else := sprintf("in scope %s", [s])

# --- decide: may the caller do input.action on input.resource? ---------------

known_resource := data.catalog[input.resource]

# Tenant-level resources are decided at the tenant's root, whatever scope
# the request names.
decision_scope := "" if known_resource.level == "tenant"

else := input.scope

decision_chain := ancestors(decision_scope)

held := held_in(decision_chain)

# [distance, role, scope, grant, via, policies] that permit it.
permitting contains [h[0], h[1], h[2], h[3], h[4], policies] if {
	some h in held
	policies := data.tenant.roles[h[1]][input.resource][input.action]
}

allow(reason, basis) := {"allowed": true, "reason": concat("", ["allowed: ", reason]), "basis": basis}

deny(reason) := {"allowed": false, "reason": concat("", ["denied: ", reason])}

below(s) := "" if s == decision_scope

else := sprintf(", which contains %s", [scope_words(decision_scope)])

policy_words(policies) := sprintf("policy %s", [policies[0]]) if count(policies) == 1

else := sprintf("policies %s", [concat(", ", policies)])

granted(p) := allow(
	sprintf("%s holds role %s %s %s (%s)%s; its %s permits %s", [who, p[1], in_scope(p[2]), p[4], p[3], below(p[2]), policy_words(p[5]), what]),
	{"role": p[1], "scope": p[2], "grant": p[3], "via": p[4], "policies": p[5]},
)

where_words := sprintf("at the tenant's root (%s is a tenant-level resource)", [input.resource]) if {
	known_resource.level == "tenant"
}

else := "at the tenant's root" if decision_scope == ""

else := sprintf("in %s or above it (%s)", [scope_words(decision_scope), concat(", ", [scope_words(a) | some a in array.slice(decision_chain, 1, 100)])])

groups_words := "" if count(input.caller.groups) == 0

else := sprintf(", directly or through its groups %s%s", [
	concat(", ", array.slice(input.caller.groups, 0, 10)),
	more_words(count(input.caller.groups), 10, ","),
])

# The same, closed by a comma inside a sentence.
groups_clause := "" if count(input.caller.groups) == 0

else := concat("", [groups_words, ","])

decision := deny(sprintf("unknown resource %q; resources: %s", [input.resource, concat(", ", [r | some r, _ in data.catalog])])) if {
	not known_resource
}

else := deny(sprintf("%s offers no action %q; its actions: %s", [input.resource, input.action, concat(", ", [a | some a, _ in known_resource.actions])])) if {
	not known_resource.actions[input.action]
}

else := allow(sprintf("%s is a platform operator, and platform operators may do anything (%s)", [who, what]), {"platformOperator": true}) if {
	input.caller.platformOperator == true
}

else := deny(refusal) if refusal

else := deny(sprintf("only platform operators may do %s", [what])) if {
	known_resource.actions[input.action].platformOnly
}

else := granted(sort(permitting)[0]) if count(permitting) > 0

else := deny(sprintf("no role that %s holds %s%s permits %s; %s", [who, where_words, groups_clause, what, roles_words(held)]))

# --- permissions: everything the caller may do in input.scope ---------------

everything contains [r, a] if {
	some r, resource in data.catalog
	some a, action in resource.actions
}

scope_held := held_in(ancestors(input.scope))

# A grant below the root gives nothing on tenant-level resources.
reaches(r, s) if data.catalog[r].level == "scope"

reaches(_, s) if s == ""

held_permissions contains [r, a] if {
	some h in scope_held
	some r, actions in data.tenant.roles[h[1]]
	reaches(r, h[2])
	some a, _ in actions
	not data.catalog[r].actions[a].platformOnly
}

permissions := {"permissions": everything, "reason": sprintf("%s is a platform operator, and platform operators may do anything", [who])} if {
	input.caller.platformOperator == true
}

else := {"permissions": set(), "reason": refusal} if refusal

else := {"permissions": held_permissions, "reason": sprintf("%s %s%s: %s", [who, where_held, groups_words, roles_words(scope_held)])}

where_held := "at the tenant's root" if input.scope == ""

else := sprintf("in %s and above it", [scope_words(input.scope)])
