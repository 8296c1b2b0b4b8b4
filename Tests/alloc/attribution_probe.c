/* The allocation counter's own test (AllocationTests.testCounterAttributesEachAllocationToItsCaller):
 * `attribution_probe OURS GEMMS` makes OURS allocations itself, then GEMMS calls of
 * cblas_sgemm in the shape that makes OpenBLAS's AVX-512 small-matrix kernel allocate (row-major
 * NN, C[100, 20] = A[100, 500] · B[500, 20]: column-major M = 20 leaves 4 rows after the
 * 16-row blocks, and K = 500 ≥ 32; vae-dist's input gradient into a 20-wide code has it). */
#include <cblas.h>
#include <stdlib.h>

int main(int argc, char **argv) {
  if (argc != 3) return 2;
  int ours = atoi(argv[1]), gemms = atoi(argv[2]);
  float *a = calloc(100 * 500, sizeof(float)), *b = calloc(500 * 20, sizeof(float)), *c = calloc(100 * 20, sizeof(float));
  for (int i = 0; i < ours; i++) {
    void *volatile p = malloc(64); /* volatile: the compiler may not drop the pair */
    free(p);
  }
  for (int i = 0; i < gemms; i++)
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, 100, 20, 500, 1, a, 500, b, 20, 0, c, 20);
  free(a), free(b), free(c);
  return 0;
}
