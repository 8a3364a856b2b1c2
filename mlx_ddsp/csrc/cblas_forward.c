/* cblas_sgemm / cblas_dgemm for MLX's CPU backend, forwarded to the OpenBLAS of the scipy-openblas32 wheel.

   That wheel prefixes its symbols (scipy_cblas_sgemm, ...), so on its own it cannot stand in for the reference
   BLAS that mlx[cpu] links; preloaded, this library does (mlx_ddsp/native.py builds and preloads it). The enum
   arguments are passed through as int: CBLAS fixes their values. */

typedef int blasint;

void scipy_cblas_sgemm(int order, int trans_a, int trans_b, blasint m, blasint n, blasint k, float alpha,
                       const float *a, blasint lda, const float *b, blasint ldb, float beta, float *c, blasint ldc);
void scipy_cblas_dgemm(int order, int trans_a, int trans_b, blasint m, blasint n, blasint k, double alpha,
                       const double *a, blasint lda, const double *b, blasint ldb, double beta, double *c,
                       blasint ldc);

void cblas_sgemm(int order, int trans_a, int trans_b, blasint m, blasint n, blasint k, float alpha, const float *a,
                 blasint lda, const float *b, blasint ldb, float beta, float *c, blasint ldc) {
  scipy_cblas_sgemm(order, trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

void cblas_dgemm(int order, int trans_a, int trans_b, blasint m, blasint n, blasint k, double alpha, const double *a,
                 blasint lda, const double *b, blasint ldb, double beta, double *c, blasint ldc) {
  scipy_cblas_dgemm(order, trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}
