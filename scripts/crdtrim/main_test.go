package main

import (
	"testing"

	"github.com/stretchr/testify/require"
)

const in = `---
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
spec:
  versions:
  - name: v1
    schema:
      openAPIV3Schema:
        properties:
          spec:
            description: kept
            properties:
              idleFor:
                description: kept
                type: string
              template:
                description: kept, the root's own
                properties:
                  description:
                    description: dropped, though the field is named description
                    type: string
                  list:
                    description: dropped
                    items:
                      description: dropped
                      properties:
                        count:
                          description: dropped
                          format: int64
                          maximum: 9007199254740993
                          type: integer
                      type: object
                    type: array
                type: object
            type: object
        type: object
`

const want = `---
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
spec:
  versions:
  - name: v1
    schema:
      openAPIV3Schema:
        properties:
          spec:
            description: kept
            properties:
              idleFor:
                description: kept
                type: string
              template:
                description: kept, the root's own
                properties:
                  description:
                    type: string
                  list:
                    items:
                      properties:
                        count:
                          format: int64
                          maximum: 9007199254740993
                          type: integer
                      type: object
                    type: array
                type: object
            type: object
        type: object
`

func TestTrim(t *testing.T) {
	out, err := trim([]byte(in), []string{"spec.template"})
	require.NoError(t, err)
	require.Equal(t, want, string(out))
	again, err := trim(out, []string{"spec.template"})
	require.NoError(t, err)
	require.Equal(t, want, string(again), "a trimmed file is left as it is")

	_, err = trim([]byte(in), []string{"spec.nothing"})
	require.ErrorContains(t, err, "no field spec.nothing")
	_, err = trim([]byte(in[4:]), []string{"spec.template"})
	require.Error(t, err, "not what controller-gen writes")
}
