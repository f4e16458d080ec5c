// cxxprog.cpp: C++ allocation sites whose figures test_cxx.py knows exactly: operator new of a
// class, new[] in two instantiations of a template, std::vector growth, a std::string too long for
// the small-string buffer, and an always-inlined helper. Lines marked SITE-x are looked up by the
// test.
#include <cstdlib>
#include <string>
#include <vector>

#define KEEP(p) __asm__ volatile("" : : "r"(p) : "memory")

struct Node {
	long value;
	Node *next;
};

template <typename T> __attribute__((noinline)) T *make_array(int n)
{
	T *p = new T[n]; // SITE-array
	KEEP(p);
	return p;
}

__attribute__((noinline)) static Node *build_list(int n)
{
	Node *head = nullptr;
	for (int i = 0; i < n; i++)
		head = new Node{i, head}; // SITE-node
	KEEP(head);
	return head;
}

__attribute__((noinline)) static void free_list(Node *n)
{
	while (n) {
		Node *next = n->next;
		delete n;
		n = next;
	}
}

__attribute__((noinline)) static size_t fill_vector(int n)
{
	std::vector<int> v; // grows 1, 2, 4, ..., 128: eight allocations, freed on return
	for (int i = 0; i < n; i++)
		v.push_back(i);
	KEEP(v.data());
	return v.size();
}

__attribute__((noinline)) static std::string *long_string(void)
{
	return new std::string(100, 'x'); // two allocations: the string object and its 101 bytes
}

static inline __attribute__((always_inline)) void *grab(size_t n)
{
	return std::malloc(n); // SITE-inline
}

__attribute__((noinline)) static void use_inline(int n)
{
	for (int i = 0; i < n; i++) {
		void *p = grab(48); // CALL-inline
		KEEP(p);
		std::free(p);
	}
}

int main()
{
	Node *list = build_list(1000);        // 1000 x 16 B, freed below
	free_list(list);
	int *ints = make_array<int>(50);      // 200 B, kept
	double *dbls = make_array<double>(50); // 400 B, freed
	delete[] dbls;
	KEEP(ints);
	fill_vector(100);
	std::string *s = long_string();        // kept
	KEEP(s);
	use_inline(300);
	return 0;
}
